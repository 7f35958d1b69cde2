"""The dashboard's RovoDev page: accounts with their masked token, usage bars (today
against the daily limit, what RovoDev said is left), add an account, test one, sync."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from blueprints.common import gateway, utcnow
from blueprints.web import admin, guard, no_cache
from extensions import db
from gateway import periods
from gateway.admin import rovodev
from gateway.admin.errors import InputError
from gateway.keys import provider_keys as keyring
from gateway.keys import rovodev_accounts
from gateway.providers import wording
from gateway.providers.rovodev import RovodevAdapter
from models import Profile, ProviderKey

bp = Blueprint("rovodev", __name__)
bp.before_request(guard)
bp.after_request(no_cache)
FORM_FIELDS = (
    "profile",
    "email",
    "apiToken",
    "cloudId",
    "dailyTokenLimit",
    "authScheme",
    "baseUrl",
)
PROVIDER = rovodev_accounts.PROVIDER


def _page(values: dict | None = None, errors: dict | None = None, status: int = 200):
    gateway().books.flush()
    now = utcnow()
    today = periods.local_day(now)
    usage = keyring.key_usage(db.session, today)
    requests = rovodev_accounts.requests_today(db.session, today)
    query = select(ProviderKey).where(ProviderKey.provider == PROVIDER).order_by(ProviderKey.id)
    accounts = [
        rovodev_accounts.describe(key, usage.get(key.id), requests.get(key.id, 0), now)
        for key in db.session.scalars(query)
    ]
    profiles = list(db.session.scalars(select(Profile.name).order_by(Profile.name)))
    defaults = {"profile": "default", "dailyTokenLimit": "20000000", "authScheme": "bearer"}
    page = render_template(
        "rovodev.html",
        accounts=accounts,
        profiles=profiles,
        values=values or defaults,
        errors=errors or {},
        default_base_url=RovodevAdapter.default_base_url,
    )
    return page, status


@bp.get("/rovodev")
def accounts():
    return _page()


@bp.post("/rovodev")
def add_account():
    """Save an account from the form, then test it at once and say how that went."""
    values = {f: (request.form.get(f) or "").strip() for f in FORM_FIELDS}
    body = {f: v for f, v in values.items() if v}
    body.setdefault("email", "")
    body.setdefault("apiToken", "")
    try:
        key = rovodev.create_account(admin(), rovodev_accounts.account_input(body))
    except InputError as exc:
        db.session.rollback()
        error = rovodev_accounts.camel_error(exc)
        values.pop("apiToken")  # a token never goes back to the browser
        return _page(values, error.by_field(), 422)  # as typed; a reload changes nothing
    label = f"#{key.id} {key.name} ({key.secret_masked})"
    _flash_test(f"Added RovoDev account {label}.", gateway().tester.test(key.id))
    return redirect(url_for("rovodev.accounts"))


def _flash_test(prefix: str, result: dict) -> None:
    if result["result"] == "ok":
        flash(f"{prefix} Test passed: RovoDev answered the credits check.", "ok")
        return
    error = result["error"]
    if result["result"] == "auth_failed":
        error = f"{wording([PROVIDER], 'auth_failed')}: {error}"
    flash(f"{prefix} Test: {result['result'].replace('_', ' ')} — {error}", "error")


@bp.post("/rovodev/<int:key_id>/test")
def test_account(key_id: int):
    key = db.session.get(ProviderKey, key_id)
    if key is None or key.provider != PROVIDER:
        abort(404)
    _flash_test(f"Account #{key_id}.", rovodev.test_account(admin(), key_id))
    return redirect(url_for("rovodev.accounts"))


@bp.post("/rovodev/sync")
def sync_accounts():
    """Ask RovoDev what is left on every account (of a profile, if one is chosen)."""
    profile = (request.form.get("profile") or "").strip() or None
    done = rovodev.sync(admin(), profile)
    flash(f"Synced {done['synced']} of {len(done['keys'])} RovoDev account(s).", "ok")
    for entry in done["keys"]:
        if entry["result"] != "ok":
            flash(f"Account #{entry['id']} {entry['name']}: {entry['error']}", "error")
    return redirect(url_for("rovodev.accounts"))

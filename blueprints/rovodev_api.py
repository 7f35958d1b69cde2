"""The RovoDev integration guide's admin endpoints (`/api/admin/rovodev-keys…`), with its
camelCase fields. Accounts are provider keys of kind `rovodev` (gateway/rovodev_accounts);
authentication and errors are the admin API's."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from sqlalchemy import select

from blueprints import admin_api
from blueprints.common import gateway, utcnow
from blueprints.web import admin
from extensions import db
from gateway import periods
from gateway.admin import provider_keys, rovodev
from gateway.admin.errors import InputError
from gateway.errors import GatewayError
from gateway.keys import provider_keys as keyring
from gateway.keys import rovodev_accounts
from gateway.providers import wording
from models import Profile, ProviderKey

bp = Blueprint("rovodev_api", __name__)
bp.before_request(admin_api.authenticate)
bp.register_error_handler(InputError, admin_api.bad_input)
PROVIDER = rovodev_accounts.PROVIDER


def _accounts(query) -> list[dict]:
    now = utcnow()
    today = periods.local_day(now)
    usage = keyring.key_usage(db.session, today)
    requests = rovodev_accounts.requests_today(db.session, today)
    return [
        rovodev_accounts.describe(key, usage.get(key.id), requests.get(key.id, 0), now)
        for key in db.session.scalars(query)
    ]


def _of_kind():
    return select(ProviderKey).where(ProviderKey.provider == PROVIDER).order_by(ProviderKey.id)


def _account(key_id: int) -> dict:
    return _accounts(_of_kind().where(ProviderKey.id == key_id))[0]


def _account_or_404(key_id: int) -> ProviderKey:
    key = db.session.get(ProviderKey, key_id)
    if key is None or key.provider != PROVIDER:
        raise GatewayError(404, f"No RovoDev key with id {key_id}.", code="key_not_found")
    return key


@bp.get("/rovodev-keys")
def list_accounts():
    """Every RovoDev account (token masked), optionally of one profile (`?profile=`)."""
    query = _of_kind()
    if profile := request.args.get("profile"):
        query = query.join(Profile).where(Profile.name == profile)
    return jsonify({"data": _accounts(query)})


@bp.post("/rovodev-keys")
def create_account():
    """Add an account: `email`, `apiToken` (stored encrypted), optional `profile`,
    `cloudId`, `dailyTokenLimit` (default 20,000,000), `authScheme`, `baseUrl`. It is
    tested at once (unless `"test": false`); an account whose test failed is kept, its
    status saying why."""
    data = rovodev_accounts.account_input(admin_api._json())
    admin_api.contract()
    key = rovodev.create_account(admin(), data)
    if not keyring.wants_test(admin_api._json()):
        return jsonify(_account(key.id)), 201
    key_id = key.id
    db.session.remove()  # no database connection held during the upstream call
    answer = _test_answer(gateway().tester.test(key_id))
    return jsonify({**_account(key_id), "test": answer}), 201


@bp.put("/rovodev-keys/<int:key_id>")
def update_account(key_id: int):
    """Change the fields given; a new `apiToken` replaces the old. An account whose token
    or gateway changed is tested again (unless `"test": false`)."""
    key = _account_or_404(key_id)
    body = admin_api._json()
    data = rovodev_accounts.account_input(body, key)
    admin_api.contract()
    fields = sorted(f for f in body if f != "apiToken")
    moved = rovodev.update_account(admin(), key, data, fields)
    if moved and keyring.wants_test(body):  # another account or gateway: tested again
        db.session.remove()
        gateway().tester.test(key_id)
    return jsonify(_account(key_id))


@bp.delete("/rovodev-keys/<int:key_id>")
def delete_account(key_id: int):
    """Remove an account; its log rows and usage stay."""
    provider_keys.delete(admin(), _account_or_404(key_id))
    return "", 204


@bp.post("/rovodev-keys/test/<int:key_id>")
def test_account(key_id: int):
    """Test the account with RovoDev's credits check; the result sets its status."""
    _account_or_404(key_id)
    result = rovodev.test_account(admin(), key_id)
    return jsonify({**_test_answer(result), "key": _account(key_id)})


def _test_answer(result: dict) -> dict:
    """A key test's result as the guide's API spells it."""
    error = result["error"]
    if result["result"] == "auth_failed":
        error = f"{wording([PROVIDER], 'auth_failed')}: {error}"
    return {
        "success": result["result"] == "ok",
        "result": result["result"],
        "statusCode": result["status_code"],
        "error": error,
    }


@bp.post("/rovodev-keys/sync")
def sync_accounts():
    """Usage sync of the accounts (`{"profile": …}` or `?profile=` narrows it)."""
    body = admin_api._json() if isinstance(admin_api._json(), dict) else {}
    profile = request.args.get("profile") or body.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise GatewayError(400, "'profile' must be a string.", param="profile")
    admin_api.contract()
    done = rovodev.sync(admin(), profile)
    keys = [
        {
            "id": entry["id"],
            "name": entry["name"],
            "profile": entry["profile"],
            "result": entry["result"],
            "remainingTokens": entry.get("remaining_tokens"),
            "syncedAt": entry.get("synced_at"),
            "error": entry.get("error"),
        }
        for entry in done["keys"]
    ]
    return jsonify({"synced": done["synced"], "failed": done["failed"], "keys": keys})


@bp.get("/rovodev-keys/stats/<profile>")
def profile_stats(profile: str):
    """A profile's accounts: keys, active and internal ones, tokens used today against
    the daily limits, what is left, requests."""
    if db.session.scalar(select(Profile.id).where(Profile.name == profile)) is None:
        raise GatewayError(404, f"Profile '{profile}' does not exist.", code="profile_not_found")
    query = _of_kind().join(Profile).where(Profile.name == profile)
    return jsonify(rovodev_accounts.profile_stats(profile, _accounts(query)))

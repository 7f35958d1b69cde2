"""htmx fragments of the overview that refresh themselves (F51): cards, bars, errors."""

from __future__ import annotations

from flask import Blueprint, render_template

from blueprints.common import gateway, key_health
from blueprints.web import guard, no_cache
from extensions import db
from gateway import periods
from gateway.ledger import reports
from models import ProviderKey

bp = Blueprint("partials", __name__)
bp.before_request(guard)
bp.after_request(no_cache)


@bp.before_request
def _fresh() -> None:
    """Show every request this process has answered, not only those already written."""
    gateway().books.flush()


@bp.get("/cards")
def cards():
    today = periods.local_day(gateway().clock.now())
    return render_template("partials/cards.html", cards=reports.overview_cards(db.session, today))


@bp.get("/key-bars")
def key_bars():
    now = gateway().clock.now()
    return render_template("partials/key_bars.html", keys=key_health(now), now=now)


@bp.get("/profile-bars")
def profile_bars():
    keys = key_health(gateway().clock.now())
    return render_template(
        "partials/profile_bars.html", profiles=reports.profile_usage(db.session, keys)
    )


@bp.get("/errors")
def errors():
    return render_template(
        "partials/errors.html",
        errors=reports.recent_errors(db.session, kind="provider"),
        key_names=reports.names(db.session, ProviderKey),
    )


@bp.get("/budget-bars")
def budget_bars():
    now = gateway().clock.now()
    budgets = reports.client_budgets(db.session, gateway().limiter, now, active_only=True)
    return render_template("partials/budget_bars.html", budgets=budgets)

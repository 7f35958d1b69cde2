"""Client key commands: create, change, revoke, delete and top up (the one top-up rule);
each audits once and makes the proxy see the change."""

from __future__ import annotations

from gateway.admin.context import BUDGETS, CALLERS, Admin
from gateway.admin.errors import InputError
from gateway.keys import client_keys as clientkeys
from gateway.keys.client_keys import ClientKeyInput
from gateway.ledger import credits
from gateway.limits import budgets
from models import ClientKey
from models.types import usd


def create(admin: Admin, data: ClientKeyInput, defaults: dict | None = None):
    """A new key bound to a profile: (row, the key itself, shown once). Limits not
    given take `defaults`."""
    row, key = clientkeys.create(admin.session, data, admin.actor, admin.now(), defaults)
    admin.audit(
        "client_key.create", f"client_key:{row.id}", name=row.name, profile=row.profile.name
    )
    admin.commit(CALLERS)
    return row, key


BUDGET_COLUMNS = {"max_budget_micros", "budget_duration"}


def update(admin: Admin, row: ClientKey, data: ClientKeyInput, fields: list[str]) -> None:
    """Change name, profile, models, expiry or limits (the key itself never changes)."""
    clientkeys.update(admin.session, row, data, admin.now())
    admin.audit("client_key.update", f"client_key:{row.id}", fields=fields)
    # BUDGETS: the proxy's callers and the budget alerts read the new budget at once.
    admin.commit(BUDGETS if data.limits.keys() & BUDGET_COLUMNS else CALLERS)


def revoke(admin: Admin, row: ClientKey) -> None:
    """Revoke for good: the key is refused from now on."""
    clientkeys.revoke(row, admin.now())
    admin.audit("client_key.revoke", f"client_key:{row.id}", name=row.name)
    admin.commit(BUDGETS)
    admin.gateway.forget_limits(f"ck:{row.id}")


def delete(admin: Admin, row: ClientKey) -> None:
    """Remove the key and its stored responses; its request-log rows keep its id."""
    key_id = row.id
    admin.audit("client_key.delete", f"client_key:{key_id}", name=row.name)
    clientkeys.remove(admin.session, row)
    admin.commit(CALLERS)
    admin.gateway.forget_limits(f"ck:{key_id}")


def top_up(admin: Admin, row: ClientKey, amount: object) -> int:
    """Add `amount` USD (a decimal string or number) to a key's budget; the micro-dollars
    added. A key without a budget is a 409: there is nothing to top up."""
    try:
        micros = budgets.parse_usd("amount", amount)
    except ValueError as exc:
        raise InputError("amount", str(exc)) from None
    if not micros:
        raise InputError("amount", "'amount' must be a positive amount in USD.")
    admin.checked()
    reference = credits.top_up(admin.session, row.id, micros, admin.now(), admin.actor)
    if reference is None:  # a conflict with the key as saved: the request itself is fine
        raise InputError("amount", "This key has no budget to top up; set max_budget first.", 409)
    admin.audit("client_key.topup", f"client_key:{row.id}", amount=usd(micros), reference=reference)
    admin.commit(BUDGETS)
    return micros

"""Price commands: override a model's price, or drop the override (genai-prices again)."""

from __future__ import annotations

from sqlalchemy import select

from gateway.admin.context import PRICES, Admin
from gateway.admin.errors import InputError, Problems
from gateway.ledger import pricing
from models import PriceOverride

FIELDS = ("input_per_mtok", "output_per_mtok", "per_request")


def set_price(admin: Admin, model: str, data: object) -> PriceOverride:
    """Override a model's price (USD per million tokens in and out, and/or per request)."""
    _check_fields(model, data)
    try:
        row = pricing.set_override(admin.session, model, data, admin.actor, admin.now())
    except ValueError as exc:
        admin.session.rollback()
        raise InputError(_field_of(str(exc)), str(exc)) from None
    admin.checked()
    admin.audit("price.set", f"model:{model}", **{f: str(data.get(f)) for f in FIELDS})
    admin.commit(PRICES)
    return row


def _check_fields(model: str, data: object) -> None:
    """Every bad field at once (set_override stops at the first)."""
    if not isinstance(data, dict):
        return  # set_override says so
    problems = Problems()
    if not model or len(model) > 128:
        problems.add(InputError("model", "'model' must be 1 to 128 characters."))
    with problems.field():
        _as_input("per_request", pricing.parse_per_request, data.get("per_request"))
    for field in ("input_per_mtok", "output_per_mtok"):
        if data.get(field) not in (None, ""):
            with problems.field():
                _as_input(field, lambda value, f=field: pricing.parse_price(f, value), data[field])
    problems.check()


def _as_input(field: str, parse, value) -> None:
    try:
        parse(value)
    except ValueError as exc:
        raise InputError(field, str(exc)) from None


def _field_of(message: str) -> str:
    """The field a pricing error names (its messages quote it)."""
    return next((f for f in (*FIELDS, "model") if f in message), "body")


def delete_price(admin: Admin, model: str) -> bool:
    """Drop the model's override; False when it has none."""
    row = admin.session.scalar(select(PriceOverride).where(PriceOverride.model == model))
    if row is None:
        return False
    admin.audit("price.delete", f"model:{model}")
    admin.session.delete(row)
    admin.commit(PRICES)
    return True

"""Price commands: override a model's price, or drop the override (genai-prices again)."""

from __future__ import annotations

from sqlalchemy import select

from gateway.admin.context import PRICES, Admin
from gateway.admin.errors import InputError
from gateway.ledger import pricing
from models import PriceOverride

FIELDS = ("input_per_mtok", "output_per_mtok", "per_request")


def set_price(admin: Admin, model: str, data: object) -> PriceOverride:
    """Override a model's price (USD per million tokens in and out, and/or per request)."""
    try:
        row = pricing.set_override(admin.session, model, data, admin.actor, admin.now())
    except ValueError as exc:
        admin.session.rollback()
        raise InputError(_field_of(str(exc)), str(exc)) from None
    admin.checked()
    admin.audit("price.set", f"model:{model}", **{f: str(data.get(f)) for f in FIELDS})
    admin.commit(PRICES)
    return row


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

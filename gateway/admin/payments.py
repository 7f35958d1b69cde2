"""A payment provider's word that money arrived (the Paystack webhook): credited once per
reference, committed here, and the proxy's budgets re-read."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from gateway.admin.context import BUDGETS, Admin
from gateway.ledger import credits


def receive(admin: Admin, body: bytes, micros_per_unit: int) -> credits.Outcome:
    """Credit the payment the signed body tells of (once per reference, whichever of its
    deliveries comes first); credits.PayloadError for a body that is not one."""
    try:
        outcome = credits.receive(admin.session, body, micros_per_unit, admin.now(), admin.address)
        admin.session.commit()
    except credits.PayloadError:
        admin.session.rollback()
        raise
    except IntegrityError:  # the same reference, delivered twice at once: the other won
        admin.session.rollback()
        return credits.Outcome("duplicate", credits.parse(body).reference)
    if outcome.status == credits.CREDITED:
        admin.forget(BUDGETS)  # the proxy sees the new budget now (elsewhere: 1 s)
    return outcome

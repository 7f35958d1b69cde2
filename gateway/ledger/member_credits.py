"""A member buys credits with Paystack: the amount they pick in USD becomes a payment in
the Paystack account's currency, and the paid charge is added to their balance once.

The purchase starts with Paystack's `transaction/initialize` (the member's email, the
amount in the currency's smallest unit, `metadata.member_id`, where to come back); the
member pays on Paystack's page and comes back with the transaction's reference, which is
verified with `transaction/verify/{reference}` before anything is credited. Paystack's
signed `charge.success` webhook (credits.py) credits the same payment too: whichever
arrives first credits it, the unique reference makes the other a 'duplicate'.

Amounts convert as payments do (KEYRELAY_PAYSTACK_MICROS_PER_UNIT micro-dollars per
smallest unit, 10000: US cents): the amount asked is rounded up to a whole unit, and
what is credited is always what Paystack says was paid, times that rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.ledger import credits
from gateway.ledger.paystack import Paystack, PaystackError
from models.types import usd

# The most one purchase may be, in USD (a typo's guard, not a business rule).
MAX_PURCHASE_USD = Decimal(10_000)
CHECKOUT_EVENT = "checkout.verify"


class PurchaseError(ValueError):
    """A purchase that cannot go ahead; the message is for the member."""


@dataclass(frozen=True)
class Result:
    """What the member's return from Paystack did, and what to tell them."""

    credited: bool
    message: str


def units_of(amount: str | None, micros_per_unit: int) -> tuple[int, int]:
    """An amount in USD as typed → (smallest currency units to charge, micro-dollars they
    buy). PurchaseError with a readable message when it is not a usable amount."""
    try:
        value = Decimal((amount or "").strip().removeprefix("$"))
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise PurchaseError("Enter the amount of credits to buy in USD, such as 10 or 5.50.")
    if value <= 0 or value > MAX_PURCHASE_USD:
        raise PurchaseError(f"The amount must be more than $0 and at most ${MAX_PURCHASE_USD:,}.")
    micros = int((value * 1_000_000).to_integral_value(rounding="ROUND_CEILING"))
    units = -(-micros // micros_per_unit)  # rounded up to a whole unit of the currency
    return units, units * micros_per_unit


def start(
    paystack: Paystack, member_id: int, email: str | None, units: int, callback_url: str
) -> str:
    """Start the payment with Paystack; the page to send the member to."""
    if not email:
        raise PurchaseError("Your account has no email address, which Paystack needs.")
    try:
        checkout = paystack.initialize(email, units, callback_url, {"member_id": member_id})
    except PaystackError as exc:
        raise PurchaseError(f"The payment could not be started: {exc}") from None
    return checkout.authorization_url


def finish(
    session: Session, paystack: Paystack, member_id: int, reference: str | None,
    micros_per_unit: int, now: datetime, address=None,
) -> Result:  # fmt: skip
    """Verify the payment the member came back with and credit it (once per reference),
    committed; nothing is written when it raises PurchaseError."""
    reference = (reference or "").strip()
    if not reference or len(reference) > 128:
        raise PurchaseError("Paystack sent you back without a payment reference.")
    try:
        paid = paystack.verify(reference)
    except PaystackError as exc:
        raise PurchaseError(f"The payment could not be checked: {exc}") from None
    if not paid.paid:
        return Result(False, f"The payment was not completed (Paystack says: {paid.status}).")
    try:
        owner = credits.member_of(paid.metadata)
    except credits.PayloadError:
        owner = None
    if owner != member_id:
        raise PurchaseError("This payment was not made from your account.")
    charge = credits.Charge(
        CHECKOUT_EVENT, paid.reference, paid.amount, paid.currency, None, member_id
    )
    try:
        outcome = credits.credit_member(session, charge, micros_per_unit, now, address)
        session.commit()
    except IntegrityError:  # the webhook credited the same payment at this moment
        session.rollback()
        outcome = credits.Outcome("duplicate", paid.reference, member_id=member_id)
    except credits.PayloadError as exc:  # an amount no real payment has
        session.rollback()
        raise PurchaseError(f"The payment could not be added: {exc}") from None
    return credited_message(outcome)


def credited_message(outcome: credits.Outcome) -> Result:
    """What the member reads after their return: credited now, or already."""
    if outcome.status == credits.CREDITED:
        added = dollars(outcome.credit_micros)
        return Result(True, f"Payment received: ${added} added to your balance.")
    return Result(False, "This payment is already in your balance.")


def dollars(micros: int) -> str:
    """Micro-dollars for people: cents when they are whole ("5.00"), else all six."""
    text = usd(micros)
    return text[:-4] if text.endswith("0000") else text

"""Credits (F35): a paid charge raises a client key's budget.

Paystack posts every event of the merchant's account to one webhook, signed with the
secret key: `x-paystack-signature` is the hex HMAC-SHA512 of the raw body. A
`charge.success` whose `data.metadata.client_key_id` names a client key credits that key
`data.amount` (the currency's smallest unit) × KEYRELAY_PAYSTACK_MICROS_PER_UNIT
micro-dollars, added to its `max_budget` (a key without a budget gets one of the credit).

Paystack retries a delivery until it gets a 2xx, so every delivery that can never succeed
is acknowledged: other events, charges not meant for KeyRelay (no client key in their
metadata), and charges naming a client key that does not exist (recorded as `unmatched`
for an admin to settle, rather than retried for 72 hours). The transaction's reference is
unique in `credit_transactions`, written in the same transaction as the budget, so a
retried or replayed delivery credits once.

A charge whose metadata names a member (`member_id`, a purchase started on the member's
dashboard, member_credits.py) credits that member's prepaid balance instead, by the same
once-per-reference rule (`credit_member`), whether the webhook or the member's return
from Paystack arrives first.

An admin's top-up (the JSON API or the dashboard) goes the same way, `add_to_budget`: one
UPDATE that adds to the budget in SQL (never read, add, write back), and a
`credit_transactions` row (source `admin`, the actor, reference `admin-<uuid>`). Twenty
top-ups at once add twenty times; a top-up racing a payment loses neither.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gateway.admin import accounts
from models import ClientKey, CreditTransaction, Member
from models.credits import ADMIN, CREDITED, PAYSTACK, UNMATCHED
from models.types import usd

log = logging.getLogger(__name__)

ACTOR = PAYSTACK
CHARGE_SUCCESS = "charge.success"
TOPUP_EVENT = "admin.topup"


class PayloadError(ValueError):
    """A signed delivery that is not a readable Paystack event (a 400)."""


@dataclass(frozen=True)
class Charge:
    """A successful charge, as far as KeyRelay reads it."""

    event: str
    reference: str
    amount: int  # the currency's smallest unit
    currency: str
    client_key_id: int | None  # None: the charge is not for a client key
    member_id: int | None = None  # a member's purchase of credits


@dataclass(frozen=True)
class Outcome:
    """What a delivery did: credited, duplicate, unmatched or ignored."""

    status: str
    reference: str | None = None
    client_key_id: int | None = None
    credit_micros: int = 0
    member_id: int | None = None

    def body(self) -> dict:
        body = {"status": self.status}
        if self.reference is not None:
            body["reference"] = self.reference
        if self.client_key_id is not None:
            body["client_key_id"] = self.client_key_id
        if self.member_id is not None:
            body["member_id"] = self.member_id
        if self.status == CREDITED:
            body["credited"] = usd(self.credit_micros)
        return body


def signature(secret: str, body: bytes) -> str:
    """The `x-paystack-signature` of a body: hex HMAC-SHA512 keyed by the secret key."""
    return hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """True when the header is the body's signature (compared in constant time)."""
    return bool(header) and hmac.compare_digest(signature(secret, body), header.strip())


def parse(body: bytes) -> Charge | str:
    """A `charge.success` for a client key, or the event's name when there is nothing to
    do with it. PayloadError when the body is not a well-formed event."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise PayloadError("The body is not JSON.") from None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise PayloadError("The body is not a Paystack event: 'event' is missing.")
    if event["event"] != CHARGE_SUCCESS:
        return event["event"]
    data = event.get("data")
    if not isinstance(data, dict):
        raise PayloadError("'data' must be an object.")
    reference, amount, currency = data.get("reference"), data.get("amount"), data.get("currency")
    if not isinstance(reference, str) or not reference.strip() or len(reference) > 128:
        raise PayloadError("'data.reference' must be a non-empty string.")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise PayloadError("'data.amount' must be a positive integer (smallest unit).")
    if not isinstance(currency, str) or not 0 < len(currency) <= 8:
        raise PayloadError("'data.currency' must be a currency code.")
    metadata = _metadata(data.get("metadata"))
    return Charge(
        event["event"],
        reference.strip(),
        amount,
        currency,
        _id_in(metadata, "client_key_id", "client_key", "a client key's id"),
        _id_in(metadata, "member_id", "member_id", "a member's id"),
    )


def _metadata(metadata: object) -> dict:
    if isinstance(metadata, str):  # Paystack passes metadata given as a string through
        try:
            metadata = json.loads(metadata) if metadata.strip() else {}
        except ValueError:
            metadata = {}
    return metadata if isinstance(metadata, dict) else {}


def member_of(metadata: object) -> int | None:
    """The member a transaction's metadata names (`member_id`), or None."""
    return _id_in(_metadata(metadata), "member_id", "member_id", "a member's id")


def _id_in(metadata: dict, name: str, alias: str, what: str) -> int | None:
    """`metadata[name]` (or `alias`): an id, as a number or digits."""
    value = metadata.get(name, metadata.get(alias))
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PayloadError(f"'data.metadata.{name}' must be {what}.")
    return value


def receive(
    session: Session, body: bytes, micros_per_unit: int, now: datetime, address=None
) -> Outcome:
    """Act on a verified delivery in the session's transaction (the caller commits)."""
    charge = parse(body)
    if isinstance(charge, str):
        return Outcome("ignored")
    if charge.member_id is not None and charge.client_key_id is None:
        return credit_member(session, charge, micros_per_unit, now, address)
    if charge.client_key_id is None:
        return Outcome("ignored", charge.reference)
    return credit(session, charge, micros_per_unit, now, address)


# The most one payment may credit: a billion dollars, far below the column's 2^63 µ$.
MAX_CREDIT_MICROS = 10**15


def credit(
    session: Session, charge: Charge, micros_per_unit: int, now: datetime, address=None
) -> Outcome:
    """Record the charge and raise its client key's budget, in the session's transaction
    (the caller commits). A reference seen before changes nothing: 'duplicate'."""
    known = select(CreditTransaction.id).where(CreditTransaction.reference == charge.reference)
    if session.scalar(known) is not None:
        return Outcome("duplicate", charge.reference)
    micros = charge.amount * micros_per_unit
    if micros > MAX_CREDIT_MICROS:  # no real payment; it would overflow the budget column
        raise PayloadError(
            f"'data.amount' credits more than ${MAX_CREDIT_MICROS // 1_000_000:,} at once."
        )
    found = add_to_budget(
        session,
        charge.client_key_id,
        micros,
        now,
        reference=charge.reference,
        source=PAYSTACK,
        actor=ACTOR,
        event=charge.event,
        amount=charge.amount,
        currency=charge.currency,
    )
    if not found:
        session.add(
            CreditTransaction(
                reference=charge.reference,
                client_key_id=None,
                status=UNMATCHED,
                amount=charge.amount,
                currency=charge.currency,
                amount_micros=micros,
                event=charge.event,
                created_at=now,
                source=PAYSTACK,
                actor=ACTOR,
            )
        )
    accounts.audit(
        session,
        ACTOR,
        "client_key.credit" if found else "credit.unmatched",
        now,
        target=f"client_key:{charge.client_key_id}",
        detail={
            "reference": charge.reference,
            "paid": charge.amount,
            "currency": charge.currency,
            "amount": usd(micros),
        },
        address=address,
    )
    session.flush()  # the unique reference: a concurrent delivery fails here, not later
    if not found:
        log.warning(
            "paystack charge %s names client key #%s, which does not exist: kept as unmatched",
            charge.reference,
            charge.client_key_id,
        )
    return Outcome(CREDITED if found else UNMATCHED, charge.reference, charge.client_key_id, micros)


def add_to_budget(
    session: Session,
    client_key_id: int,
    micros: int,
    now: datetime,
    *,
    reference: str,
    source: str,
    actor: str,
    event: str,
    amount: int = 0,
    currency: str = "USD",
    require_budget: bool = False,
) -> bool:
    """Raise a client key's budget by `micros` and record it in `credit_transactions`, in
    the session's transaction (the caller commits, then makes the proxy forget its cached
    budgets). The budget is added to by one UPDATE in SQL, never read and written back, so
    concurrent credits (top-ups, payments, other workers) all count. A key without a budget
    gets one of the credit, unless `require_budget`. False, and nothing written, when the
    key does not exist (or has no budget and one is required)."""
    query = update(ClientKey).where(ClientKey.id == client_key_id)
    if require_budget:
        query = query.where(ClientKey.max_budget_micros.is_not(None))
    changed = session.execute(
        query.values(
            max_budget_micros=func.coalesce(ClientKey.max_budget_micros, 0) + micros,
            updated_at=now,
        ).execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        return False
    session.add(
        CreditTransaction(
            reference=reference,
            client_key_id=client_key_id,
            status=CREDITED,
            amount=amount,
            currency=currency,
            amount_micros=micros,
            event=event,
            created_at=now,
            source=source,
            actor=actor,
        )
    )
    session.flush()  # a reference seen before fails here, inside the caller's transaction
    return True


def top_up(
    session: Session, client_key_id: int, micros: int, now: datetime, actor: str
) -> str | None:
    """An admin's top-up of a key that has a budget: its reference (`admin-<uuid>`), or
    None when the key has no budget to top up (nothing changed). The caller commits."""
    reference = f"{ADMIN}-{uuid.uuid4().hex}"
    added = add_to_budget(
        session,
        client_key_id,
        micros,
        now,
        reference=reference,
        source=ADMIN,
        actor=actor,
        event=TOPUP_EVENT,
        require_budget=True,
    )
    return reference if added else None


def credit_member(
    session: Session, charge: Charge, micros_per_unit: int, now: datetime, address=None
) -> Outcome:
    """Record a member's paid purchase and add it to their balance, in the session's
    transaction (the caller commits; an IntegrityError then means a concurrent delivery
    of the same reference won). A reference seen before changes nothing: 'duplicate'."""
    known = select(CreditTransaction.id).where(CreditTransaction.reference == charge.reference)
    if session.scalar(known) is not None:
        return Outcome("duplicate", charge.reference, member_id=charge.member_id)
    micros = charge.amount * micros_per_unit
    if micros > MAX_CREDIT_MICROS:
        raise PayloadError(
            f"'data.amount' credits more than ${MAX_CREDIT_MICROS // 1_000_000:,} at once."
        )
    found = session.scalar(select(Member.user_id).where(Member.user_id == charge.member_id))
    status = CREDITED if found is not None else UNMATCHED
    session.add(
        CreditTransaction(
            reference=charge.reference,
            member_id=found,
            status=status,
            amount=charge.amount,
            currency=charge.currency,
            amount_micros=micros,
            event=charge.event,
            created_at=now,
            source=PAYSTACK,
            actor=ACTOR,
        )
    )
    session.flush()  # the unique reference first: a second delivery stops here
    if found is not None:
        session.execute(
            update(Member)
            .where(Member.user_id == found)
            .values(balance_micros=Member.balance_micros + micros)
            .execution_options(synchronize_session=False)
        )  # added in SQL, never read and written back: concurrent credits all count
    accounts.audit(
        session,
        ACTOR,
        "member.credit" if found is not None else "credit.unmatched",
        now,
        target=f"member:{charge.member_id}",
        detail={
            "reference": charge.reference,
            "paid": charge.amount,
            "currency": charge.currency,
            "amount": usd(micros),
        },
        address=address,
    )
    if found is None:
        log.warning(
            "paystack charge %s names member #%s, who does not exist: kept as unmatched",
            charge.reference,
            charge.member_id,
        )
    return Outcome(status, charge.reference, None, micros, charge.member_id)

"""Credits (F35): payments that raised a client key's budget, one row per payment."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.types import UTCDateTime

CREDITED = "credited"
PAYSTACK = "paystack"
ADMIN = "admin"
# A paid charge naming a client key that does not exist: kept for an admin to settle.
UNMATCHED = "unmatched"


class CreditTransaction(db.Model):
    """A payment provider's transaction, by its reference: the unique reference is what
    makes a retried webhook credit the key once."""

    __tablename__ = "credit_transactions"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(128), unique=True)
    # SET NULL: deleting a client key keeps its payments on record.
    client_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("client_keys.id", ondelete="SET NULL"), index=True
    )
    # A member's balance credit (Paystack or an admin's adjustment) names the member;
    # deleting the member unlinks it (the payment stays on record).
    member_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    # The payment in the currency's smallest unit (cents, kobo) as the provider sent it,
    # and the budget it bought in micro-dollars.
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(48))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Where the credit came from: `paystack` (a payment) or `admin` (a top-up by hand, whose
    # `amount` paid is 0 and whose reference is `admin-<uuid>`); and who: the dashboard
    # user, `master key`, or `paystack`. Null on rows written before these columns: Paystack.
    source: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(80))

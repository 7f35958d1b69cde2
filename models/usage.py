"""Usage roll-ups: tokens and requests per provider key, model and day."""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db


class UsageDaily(db.Model):
    """Counters for one (day, profile, provider key, model); the source of quotas and stats.

    Keyed by day, so yesterday's row simply stops counting at midnight: no reset job.
    Rows outlive the request log (retention) and deleted keys (no foreign key on purpose).
    """

    __tablename__ = "usage_daily"
    # The unique key doubles as the index for "today's usage" (day first).
    __table_args__ = (UniqueConstraint("day", "profile_id", "provider_key_id", "model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    profile_id: Mapped[int] = mapped_column(Integer)
    provider_key_id: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(128))
    requests: Mapped[int] = mapped_column(Integer, default=0)
    successes: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    estimated_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)

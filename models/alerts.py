"""Budget alerts sent (F36): one row per client key, budget period and threshold."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.types import UTCDateTime


class BudgetAlert(db.Model):
    """An alert claimed for sending. The unique row decides which worker sends it, so it
    goes out once per threshold per period, across workers and restarts."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("client_key_id", "period_start", "threshold"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_key_id: Mapped[int] = mapped_column(ForeignKey("client_keys.id", ondelete="CASCADE"))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    threshold: Mapped[int] = mapped_column(Integer)  # percent of the budget
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())

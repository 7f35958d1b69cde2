"""Scheduled job runs: when each job last ran, so a start after downtime can catch up."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.types import UTCDateTime


class JobRun(db.Model):
    """The last run of one scheduled job (gateway/jobs/scheduler.py), kept in the database so
    that it outlives the process and is the same for every worker."""

    __tablename__ = "job_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last run that finished without an error: catch-up after downtime reads this one.
    last_ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_result: Mapped[dict | None] = mapped_column(JSON)
    last_error: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict:
        """The run as the admin API shows it."""
        return {
            "last_run_at": self.last_run_at.isoformat() if self.last_run_at else None,
            "last_ok_at": self.last_ok_at.isoformat() if self.last_ok_at else None,
            "last_result": self.last_result,
            "last_error": self.last_error,
        }

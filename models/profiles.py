"""Profiles: the team or tenant namespace that owns provider keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.types import UTCDateTime

DEFAULT_PROFILE = "default"


class Profile(db.Model):
    """A namespace of provider keys with its own key-selection strategy."""

    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # None means the KEYRELAY_STRATEGY default.
    strategy: Mapped[str | None] = mapped_column(String(32))
    # Seconds a request may wait for a key of this profile to come free (F32) instead of
    # failing; None or 0 fails over at once.
    wait_for_key_seconds: Mapped[int | None] = mapped_column(Integer)
    # Paid-model gating override (F25); None follows KEYRELAY_USE_PAID_MODELS.
    use_paid_models: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def to_dict(self) -> dict:
        """The profile as the admin API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "strategy": self.strategy,
            "wait_for_key_seconds": self.wait_for_key_seconds,
            "use_paid_models": self.use_paid_models,
        }

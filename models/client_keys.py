"""Client keys: the API keys KeyRelay hands to apps, each bound to one profile."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from extensions import db
from models.profiles import Profile
from models.types import UTCDateTime, usd


class ClientKey(db.Model):
    """An app's key. Only its SHA-256 is stored; the key itself is shown once at creation."""

    __tablename__ = "client_keys"
    # Ids are never handed out twice (SQLite reuses max(id) + 1 otherwise): a new row must
    # not inherit what other tables still hold under a deleted one's id.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # `kr-ab12…wxyz`: enough to recognise a key in a list, useless to call with.
    key_hint: Mapped[str] = mapped_column(String(32))
    # None: every model the profile serves; otherwise the exact model ids allowed.
    models: Mapped[list | None] = mapped_column(JSON)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Sliding 60 s limits and concurrent requests; None: unlimited.
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(Integer)
    max_parallel_requests: Mapped[int | None] = mapped_column(Integer)
    # Budget in micro-dollars per period (budgets.py); None: no budget.
    max_budget_micros: Mapped[int | None] = mapped_column(BigInteger)
    budget_duration: Mapped[str | None] = mapped_column(String(8))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(80))
    # The member who owns the key (None: an admin's key). Their suspension, balance,
    # budget and limits apply to it too; deleting the member deletes their keys.
    member_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    profile: Mapped[Profile] = relationship(lazy="joined")

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_dict(self, now: datetime) -> dict:
        """The key as the admin API shows it: never the key, only its hint."""
        return {
            "id": self.id,
            "name": self.name,
            "profile": self.profile.name,
            "key_hint": self.key_hint,
            "models": self.models,
            "rpm_limit": self.rpm_limit,
            "tpm_limit": self.tpm_limit,
            "max_parallel_requests": self.max_parallel_requests,
            "max_budget": None if self.max_budget_micros is None else usd(self.max_budget_micros),
            "budget_duration": self.budget_duration,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "status": self.status(now),
            "created_by": self.created_by,
            "member_id": self.member_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

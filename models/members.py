"""Members: the people who spend keys, with their own credits, budget and limits; the
invites that let them sign up; their personal access tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from extensions import db
from models.profiles import Profile
from models.types import UTCDateTime, usd
from models.users import User


class Member(db.Model):
    """A member's money and limits; one row per user whose role is `member`."""

    __tablename__ = "members"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    # Prepaid credits in micro-dollars; their keys' spend comes off it.
    balance_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # Everything their keys' requests ever cost, booked in the same statement that takes
    # the cost off the balance: balance + spent is what they were funded with, read in
    # one row on every request (gateway/ledger/wallet.py) instead of summed from the log.
    spent_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Spend allowed per budget period (micro-dollars; None: no budget). Periods run from
    # `created_at` as client-key budgets do (gateway/limits/budgets.py: 1h, 1d, 7d, 30d, 1mo).
    budget_micros: Mapped[int | None] = mapped_column(BigInteger)
    budget_period: Mapped[str | None] = mapped_column(String(8))
    # Requests and tokens per minute over all their keys together; None: unlimited.
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(Integer)
    # Keys they may hold at once (revoked keys do not count).
    max_keys: Mapped[int] = mapped_column(Integer)
    # The profile (pool and models) their keys are bound to.
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"), index=True)
    # Set: every key of theirs is refused, and they cannot create keys.
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(lazy="joined")
    profile: Mapped[Profile] = relationship(lazy="joined")

    def status(self) -> str:
        return "suspended" if self.suspended_at is not None else "active"

    def to_dict(self) -> dict:
        """The member as the admin API shows them (money as exact USD strings)."""
        return {
            "id": self.user_id,
            "email": self.user.email,
            "username": self.user.username,
            "balance": usd(self.balance_micros),
            "budget": None if self.budget_micros is None else usd(self.budget_micros),
            "budget_period": self.budget_period,
            "rpm_limit": self.rpm_limit,
            "tpm_limit": self.tpm_limit,
            "max_keys": self.max_keys,
            "profile": self.profile.name,
            "status": self.status(),
            "suspended_at": self.suspended_at.isoformat() if self.suspended_at else None,
            "created_at": self.created_at.isoformat(),
            "last_login_at": (
                self.user.last_login_at.isoformat() if self.user.last_login_at else None
            ),
        }


class Invite(db.Model):
    """A one-time sign-up link. Only the SHA-256 of its token is stored."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Set: only this (lower-cased) email may sign up with the invite.
    email: Mapped[str | None] = mapped_column(String(254))
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Who signed up with it; SET NULL keeps the record when that member is deleted.
    used_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class MemberToken(db.Model):
    """A member's personal access token for /api/keys/manage (`Authorization: Bearer`).
    Only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "member_tokens"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_hint: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

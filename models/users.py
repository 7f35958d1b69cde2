"""Dashboard users, login throttling counters and the audit log."""

from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.types import UTCDateTime

ADMIN = "admin"
VIEWER = "viewer"
# A member spends their own keys and credits (models/members.py); never a dashboard user.
MEMBER = "member"
# The roles the dashboard's Users page hands out; members come in through sign-up,
# invites and SSO (gateway/admin/members.py).
ROLES = (ADMIN, VIEWER)


class User(UserMixin, db.Model):
    """Someone who logs in: `admin` changes things, `viewer` only reads the dashboard,
    `member` sees only their own page (/analytics) and keys."""

    __tablename__ = "users"
    # Ids are never handed out twice (SQLite reuses max(id) + 1 otherwise): a new row must
    # not inherit what other tables still hold under a deleted one's id.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default=VIEWER)
    # Lower-cased; members sign in with it (their username is the email too when it fits).
    email: Mapped[str | None] = mapped_column(String(254), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Bumped when the password changes or the user is removed: old sessions stop working.
    session_version: Mapped[int] = mapped_column(Integer, default=1)

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    @property
    def is_member(self) -> bool:
        return self.role == MEMBER

    def get_id(self) -> str:
        """flask-login's session value: id and version, so a password change logs out."""
        return f"{self.id}:{self.session_version}"


class LoginThrottle(db.Model):
    """Failed logins for one address (`ip:…`) or one username (`user:…`) in the window."""

    __tablename__ = "login_throttle"

    scope: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEntry(db.Model):
    """One admin action: who, what, on which object, when. Never a secret."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(48))
    target: Mapped[str | None] = mapped_column(String(160))
    detail: Mapped[dict | None] = mapped_column(JSON)
    address: Mapped[str | None] = mapped_column(String(64))

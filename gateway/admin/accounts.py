"""Dashboard accounts: users and their passwords, login throttling, the audit log."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.admin.errors import InputError, Problems
from models import AuditEntry, LoginThrottle, User
from models.users import ADMIN, ROLES

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
# Checked against when the username does not exist, so both cases cost one hash.
_DUMMY_HASH = generate_password_hash("keyrelay-not-a-password")


def check_new_user(session: Session, username: str, password: str, role: str) -> None:
    """Raise InputError for a bad username, weak password, unknown role or taken name."""
    problems = Problems()  # every bad field at once
    if not USERNAME.match(username or ""):
        problems.add(
            InputError(
                "username", "Use 1–64 letters, digits, '_', '.', '@' or '-', starting with one."
            )
        )
    elif session.scalar(select(User.id).where(User.username == username)) is not None:
        problems.add(InputError("username", f"The username '{username}' is taken."))
    with problems.field():
        check_password(password)
    if role not in ROLES:
        problems.add(InputError("role", f"Role must be one of: {', '.join(ROLES)}."))
    problems.check()


def check_password(password: object) -> None:
    if not isinstance(password, str) and password is not None:
        raise InputError("password", "The password must be text.")
    if len(password or "") < MIN_PASSWORD:
        raise InputError("password", f"The password needs at least {MIN_PASSWORD} characters.")


def create_user(session: Session, username: str, password: str, role: str, now) -> User:
    """A new user with a salted scrypt hash of the password (werkzeug)."""
    check_new_user(session, username, password, role)
    user = User(
        username=username,
        password_hash=generate_password_hash(password),
        role=role,
        created_at=now,
        session_version=1,
    )
    session.add(user)
    session.flush()
    return user


def set_password(user: User, password: str) -> None:
    """Change the password; sessions opened with the old one end."""
    check_password(password)
    user.password_hash = generate_password_hash(password)
    user.session_version += 1


def verify(session: Session, username: str, password: str) -> User | None:
    """The user if the password matches; the same hashing work either way. A name with
    an `@` may also be a member's email (any case)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None and "@" in username:
        user = session.scalar(select(User).where(User.email == username.strip().lower()))
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def ensure_first_admin(session: Session, username: str, password: str | None, now):
    """With no users yet, create the first admin. Returns the generated password, if one was.

    The password comes from KEYRELAY_ADMIN_PASSWORD; without it one is generated, and the
    caller prints it once (it is stored only as a hash).
    """
    if session.scalar(select(User.id).limit(1)) is not None:
        return None
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(15)
    create_user(session, username, password, ADMIN, now)
    return generated


# -- login throttling ------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottlePolicy:
    """Failures in `window` from one address or for one user: after `slow_after` each
    further try waits (doubling from `delay`, at most `max_delay`); at `lock_after` the
    scope is refused for `lock_for`."""

    slow_after: int = 3
    lock_after: int = 10
    window: timedelta = timedelta(minutes=15)
    lock_for: timedelta = timedelta(minutes=15)
    delay: float = 0.5
    max_delay: float = 4.0


def scopes(address: str, username: str) -> list[str]:
    return [f"ip:{address}"[:160], f"user:{username.lower()}"[:160]]


def signup_scope(address: str) -> str:
    """The throttle scope counting the accounts signed up from one address."""
    return f"signup:{address}"[:160]


def locked_until(session: Session, keys: list[str], now: datetime) -> datetime | None:
    """When the latest lock on any of the scopes ends, if one is on now."""
    rows = session.scalars(select(LoginThrottle).where(LoginThrottle.scope.in_(keys)))
    ends = [row.locked_until for row in rows if row.locked_until and row.locked_until > now]
    return max(ends) if ends else None


def record_failure(
    session: Session, keys: list[str], now: datetime, policy: ThrottlePolicy
) -> float:
    """Count a failed login on every scope; returns how long to slow this answer down."""
    worst = 0
    for key in keys:
        row = session.get(LoginThrottle, key)
        if row is None or now - row.window_start > policy.window:
            if row is None:
                row = LoginThrottle(scope=key)
                session.add(row)
            row.failures, row.window_start, row.locked_until = 0, now, None
        row.failures += 1
        if row.failures >= policy.lock_after:
            row.locked_until = now + policy.lock_for
        worst = max(worst, row.failures)
    if worst <= policy.slow_after:
        return 0.0
    return min(policy.delay * 2 ** (worst - policy.slow_after - 1), policy.max_delay)


def clear_failures(session: Session, keys: list[str]) -> None:
    session.execute(delete(LoginThrottle).where(LoginThrottle.scope.in_(keys)))


# -- audit log -------------------------------------------------------------------------

_SECRET_FIELDS = {"secret", "password", "api_key", "key", "token"}


def audit(
    session: Session,
    actor: str,
    action: str,
    now: datetime,
    target: str | None = None,
    detail: dict | None = None,
    address: str | None = None,
) -> None:
    """Add an audit entry to the session (it commits with the change it describes)."""
    clean = {k: v for k, v in (detail or {}).items() if k not in _SECRET_FIELDS} or None
    session.add(
        AuditEntry(at=now, actor=actor, action=action, target=target, detail=clean, address=address)
    )

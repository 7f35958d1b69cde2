"""Sign-in events as commands: a failed login counted and audited, a login, a logout. Each
is one transaction, written here and nowhere in a view."""

from __future__ import annotations

from gateway.admin import accounts
from gateway.admin.context import Admin


def login_failed(admin: Admin, scopes: list[str], policy, target: str | None, **detail) -> float:
    """Count a failed login on the scopes and audit it; how long to slow the answer."""
    delay = accounts.record_failure(admin.session, scopes, admin.now(), policy)
    admin.audit("login.failed", target=target, **detail)
    admin.commit()
    return delay


def logged_in(admin: Admin, user, scopes: list[str], **detail) -> None:
    """A user signed in: their failures are forgotten, the login noted and audited."""
    accounts.clear_failures(admin.session, scopes)
    user.last_login_at = admin.now()
    admin.audit("login", target=f"user:{user.username}", **detail)
    admin.commit()


def logged_out(admin: Admin, user) -> None:
    """A user signed out (audited)."""
    admin.audit("logout", target=f"user:{user.username}")
    admin.commit()

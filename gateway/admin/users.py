"""Dashboard user commands: create, remove, change a password."""

from __future__ import annotations

from gateway.admin import accounts
from gateway.admin.context import Admin
from gateway.admin.errors import InputError
from models import User


def create(admin: Admin, username: str, password: str, role: str) -> User:
    """A new user (admin or viewer) with a hashed password."""
    user = accounts.create_user(admin.session, username, password, role, admin.now())
    admin.audit("user.create", f"user:{user.username}", role=user.role)
    admin.commit()
    return user


def delete(admin: Admin, user: User, by: User | None = None) -> None:
    """Remove a user; no one removes themselves (another admin can)."""
    if by is not None and user.id == by.id:
        raise InputError("user", "You cannot remove yourself; another admin can.")
    if user.is_member:  # their keys and payments need the member's own removal
        from gateway.admin import members

        members.delete(admin, members.get(admin, user.id))
        return
    admin.audit("user.delete", f"user:{user.username}")
    admin.session.delete(user)
    admin.commit()


def set_password(admin: Admin, user: User, password: str) -> None:
    """Change the password; sessions opened with the old one end."""
    accounts.set_password(user, password)
    admin.audit("user.password", f"user:{user.username}")
    admin.commit()

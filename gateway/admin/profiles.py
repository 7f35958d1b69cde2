"""Profile and route commands: a profile's settings, and the routes (aliases, patterns,
fallback chains) the proxy resolves models through."""

from __future__ import annotations

from sqlalchemy import select

from gateway import routes
from gateway.admin.context import KEYS, Admin
from gateway.admin.errors import InputError
from gateway.keys import provider_keys as keyring
from models import Profile, Route


def create_profile(admin: Admin, name: str, settings: dict) -> Profile:
    """A new profile; a name in use is refused."""
    check_new_name(admin, name)
    profile = Profile(name=name, created_at=admin.now(), **settings)
    admin.session.add(profile)
    admin.audit("profile.create", f"profile:{name}", **settings)
    admin.commit(KEYS)
    return profile


def check_new_name(admin: Admin, name: str) -> None:
    """A name a new profile may take: well formed and not in use."""
    if not keyring.PROFILE_NAME.match(name):
        raise InputError("name", "Use 1–64 letters, digits, '_', '.', '-'.")
    if admin.session.scalar(select(Profile.id).where(Profile.name == name)):
        raise InputError("name", f"A profile named '{name}' exists.")


def put_profile(admin: Admin, name: str, settings: dict) -> Profile:
    """Create the profile if need be, and change the settings given."""
    if not keyring.PROFILE_NAME.match(name):
        raise InputError("name", "A profile name may hold letters, digits, '_', '.', '-'.")
    profile = keyring.get_or_create_profile(admin.session, name, admin.now())
    return update_profile(admin, profile, settings)


def update_profile(admin: Admin, profile: Profile, settings: dict) -> Profile:
    """Change the settings given (strategy, wait for a key, paid models)."""
    for column, value in settings.items():
        setattr(profile, column, value)
    admin.audit("profile.update", f"profile:{profile.name}", **settings)
    admin.commit(KEYS)
    return profile


def create_route(admin: Admin, values: dict) -> Route:
    """Add a route; `values` as routes.parse gives them."""
    route = routes.save(admin.session, values, admin.now())
    admin.audit("route.create", f"route:{route.name}", route=route.to_dict())
    admin.commit(KEYS)
    return route


def update_route(admin: Admin, route: Route, values: dict) -> Route:
    """Change the route's fields given."""
    routes.save(admin.session, values, admin.now(), route)
    admin.audit("route.update", f"route:{route.name}", route=route.to_dict())
    admin.commit(KEYS)
    return route


def delete_route(admin: Admin, route: Route) -> None:
    """Remove a route: its name is a plain model id again."""
    admin.audit("route.delete", f"route:{route.name}")  # its name is read before it goes
    admin.session.delete(route)
    admin.commit(KEYS)

"""RovoDev account commands: accounts are provider keys of kind `rovodev`, their errors
named by the integration guide's camelCase fields."""

from __future__ import annotations

from gateway.admin import provider_keys
from gateway.admin.context import Admin
from gateway.admin.errors import InputError
from gateway.jobs import usage_sync
from gateway.keys import rovodev_accounts
from gateway.keys.provider_keys import KeyInput
from models import ProviderKey

PROVIDER = rovodev_accounts.PROVIDER


def create_account(admin: Admin, data: KeyInput) -> ProviderKey:
    """Add an account (rovodev_accounts.account_input checked `data`)."""
    try:
        return provider_keys.create(admin, data)
    except InputError as exc:
        admin.session.rollback()
        raise rovodev_accounts.camel_error(exc) from None


def update_account(admin: Admin, key: ProviderKey, data: KeyInput, fields: list[str]) -> bool:
    """Change the fields given; True when the account now reaches another upstream."""
    try:
        return provider_keys.update(admin, key, data, fields)
    except InputError as exc:
        admin.session.rollback()
        raise rovodev_accounts.camel_error(exc) from None


def test_account(admin: Admin, key_id: int) -> dict:
    """Test the account with RovoDev's credits check (nothing held meanwhile)."""
    admin.audit("key.test", f"key:{key_id}")
    admin.release()
    return admin.gateway.tester.test(key_id)


def sync(admin: Admin, profile: str | None) -> dict:
    """Ask RovoDev what is left on the accounts (of a profile, if given)."""
    admin.audit("keys.sync", f"profile:{profile or '*'}", provider=PROVIDER)
    admin.release()
    return usage_sync.sync_credits(admin.gateway, admin.now(), profile, PROVIDER)

"""Provider key commands: add, change, enable/disable, make default, delete, test, import,
reset and sync; each audits once and makes the proxy see the change."""

from __future__ import annotations

from gateway.admin.context import KEYS, Admin
from gateway.admin.errors import InputError
from gateway.jobs import usage_sync
from gateway.keys import lifecycle
from gateway.keys import provider_keys as keyring
from gateway.keys.provider_keys import KeyInput
from models import ProviderKey
from models.provider_keys import EXPIRED


def create(admin: Admin, data: KeyInput) -> ProviderKey:
    """Add a provider key (its secret stored encrypted)."""
    key = keyring.create_key(admin.session, admin.gateway.secrets, data, admin.now())
    admin.audit("key.create", f"key:{key.id}", name=key.name, profile=key.profile.name)
    admin.commit(KEYS)
    return key


def update(admin: Admin, key: ProviderKey, data: KeyInput, fields: list[str]) -> bool:
    """Change the fields given (`fields`: their names, for the audit log). True when the
    key now reaches another upstream (provider, base URL or secret), so it is worth a test."""
    before = keyring.upstream_of(key)
    keyring.update_key(admin.session, admin.gateway.secrets, key, data, admin.now())
    admin.audit(
        "key.update", f"key:{key.id}", fields=fields, secret_replaced=data.secret is not None
    )
    moved = keyring.upstream_of(key) != before
    admin.commit(KEYS)
    return moved


def delete(admin: Admin, key: ProviderKey) -> None:
    """Remove a key; its log rows and usage stay, its rate windows go."""
    delete_many(admin, [key], batch=False)


def delete_many(admin: Admin, keys: list[ProviderKey], batch: bool = True) -> None:
    """Remove keys in one transaction, one audit entry each."""
    for key in keys:
        extra = {"batch": True} if batch else {}
        admin.audit("key.delete", f"key:{key.id}", name=key.name, **extra)
        admin.session.delete(key)
    admin.commit(KEYS)
    for key in keys:
        admin.gateway.forget_limits(f"pk:{key.id}")


def set_enabled(admin: Admin, key: ProviderKey, active: bool) -> None:
    """Enable or disable a key (an admin's disable: the gateway never re-enables it)."""
    set_enabled_many(admin, [key], active, batch=False)


def set_enabled_many(admin: Admin, keys: list[ProviderKey], active: bool, batch=True) -> None:
    """Enable or disable keys in one transaction, one audit entry each. A key its state
    keeps from being enabled is left as it is: in a batch passed over, alone a 409 that
    says what brings it back."""
    now = admin.now()
    for key in keys:
        if not keyring.set_enabled(key, active, now, admin.actor):
            if not batch:
                admin.session.rollback()
                raise InputError("active", _not_enabled(key), status=409)
            continue
        extra = {"batch": True} if batch else {}
        admin.audit("key.enable" if active else "key.disable", f"key:{key.id}", **extra)
    admin.commit(KEYS)


def _not_enabled(key: ProviderKey) -> str:
    if key.status == EXPIRED:
        return f"Key #{key.id} has expired: give it a later expires_at (or none) to bring it back."
    return f"Key #{key.id} cannot serve until its secret is entered again ({key.status})."


def set_default(admin: Admin, key: ProviderKey) -> None:
    """The profile's default key: tried first while it is usable."""
    keyring.set_default(admin.session, key)
    admin.audit("key.set_default", f"key:{key.id}", name=key.name)
    admin.commit(KEYS)


def test(admin: Admin, key_id: int) -> dict:
    """Test a key with a real cheap call (no database connection held meanwhile); the
    result updates its status and is audited with its response time."""
    admin.session.commit()
    result = admin.gateway.tester.test(key_id)
    admin.audit(
        "key.test",
        f"key:{key_id}",
        result=result["result"],
        status_code=result["status_code"],
        latency_ms=result["latency_ms"],
        message=result["message"],
    )
    admin.session.commit()
    return result


def import_many(admin: Admin, text: str, shared: dict, prefix: str):
    """Add many secrets, one a line, with shared fields; the import's report."""
    report = keyring.import_keys(
        admin.session, admin.gateway.secrets, text, shared, prefix, admin.now()
    )
    admin.audit(
        "key.import",
        f"profile:{shared.get('profile', 'default')}",
        added=[entry["id"] for entry in report.added],
        duplicates=len(report.duplicates),
        rejected=len(report.rejected),
    )
    admin.commit(KEYS)
    return report


def reset(admin: Admin, keys: list[ProviderKey]) -> list:
    """Clear cooldown, failure streak and rate windows; a key the gateway took out (cooling
    down, auth failed, automatically disabled) is active again, an admin's disable stays.
    [(key, its status before)]."""
    now, changed = admin.now(), []
    for key in keys:
        was = key.status
        lifecycle.reset(key, now, admin.actor)
        admin.audit("key.reset", f"key:{key.id}", was=was, now=key.status)
        changed.append((key, was))
    admin.commit(KEYS)
    for key in keys:
        admin.gateway.forget_limits(f"pk:{key.id}")  # its RPM/TPM windows start empty
    return changed


def sync(admin: Admin, profile: str | None, provider: str | None) -> dict:
    """Ask providers that report what is left (narrowed by profile / provider)."""
    admin.audit("keys.sync", f"profile:{profile or '*'}", provider=provider)
    admin.release()
    return usage_sync.sync_credits(admin.gateway, admin.now(), profile, provider)


def restore(admin: Admin, config) -> dict:
    """Re-test auth-failed and automatically disabled keys; those that answer come back
    (each audited by housekeeping as it restores it)."""
    from gateway.jobs import housekeeping

    admin.session.commit()  # no connection held during the tests
    return housekeeping.revalidate_keys(admin.gateway, admin.now(), config, actor=admin.actor)

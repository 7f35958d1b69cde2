"""Usage sync: ask the providers that report what is left on an account (RovoDev's
credits check, OpenRouter's key info) and store it on the key, for selection.

Each figure is stored with the key's usage booked that day so far (`synced_used_*`):
selection subtracts what is booked after the sync (selection.synced_left), so a key is
not taken for fuller than it is between two syncs. Run by the `credits-sync` job every
KEYRELAY_CREDITS_SYNC_MINUTES, and on demand (`POST /api/admin/keys/sync`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import periods, store
from gateway.admin import accounts
from gateway.keys.messages import SYSTEM, upstream_message
from gateway.keys.secrets import SecretUnreadable
from gateway.providers import ADAPTERS
from gateway.providers.base import Credits, Timeouts, TransportError
from models import AuditEntry, Profile, ProviderKey
from models.provider_keys import DISABLED, SECRET_INSECURE
from models.types import usd

log = logging.getLogger(__name__)
SYNC_TIMEOUTS = Timeouts(connect=5.0, read=15.0)
audit_t = AuditEntry.__table__
REPORTING = tuple(sorted(name for name, cls in ADAPTERS.items() if cls.reports_credits))


def keys_to_sync(engine, profile: str | None, provider: str | None) -> list[tuple]:
    """(id, name, provider, profile) of every key whose provider reports credits
    (of one profile, of one kind), but disabled ones."""
    kinds = [k for k in REPORTING if provider is None or k == provider]
    query = (
        select(ProviderKey.id, ProviderKey.name, ProviderKey.provider, Profile.name)
        .join(Profile, Profile.id == ProviderKey.profile_id)
        .where(ProviderKey.provider.in_(kinds), ProviderKey.status != DISABLED)
        .order_by(ProviderKey.id)
    )
    if profile is not None:
        query = query.where(Profile.name == profile)
    with Session(engine) as session:
        return [tuple(row) for row in session.execute(query)]


def sync_credits(
    gateway, now: datetime, profile: str | None = None, provider: str | None = None
) -> dict:
    """Ask every reporting key (of the profile / kind) what is left; store what comes back.
    A key the provider refuses (401/403) becomes auth_failed, as on a request."""
    results = [
        _sync_one(gateway, now, *row) for row in keys_to_sync(gateway.engine, profile, provider)
    ]
    gateway.keys.forget()
    synced = sum(1 for r in results if r["result"] == "ok")
    log.info("usage sync: %d of %d key(s) synced", synced, len(results))
    return {"synced": synced, "failed": len(results) - synced, "keys": results}


def _sync_one(gateway, now: datetime, key_id: int, name: str, provider: str, profile: str) -> dict:
    result = {"id": key_id, "name": name, "provider": provider, "profile": profile}
    today = periods.local_day(now)
    with gateway.engine.connect() as conn:
        key = store.load_key(conn, key_id, today)
    try:
        if key.status == SECRET_INSECURE:
            raise SecretUnreadable
        target = gateway.candidates.target(key)
    except SecretUnreadable:
        return {**result, "result": "secret_unreadable", "error": "re-enter the secret"}
    try:
        answer = gateway.adapters[provider].check_credits(target, SYNC_TIMEOUTS)
    except TransportError as exc:
        failed = {**result, "result": "unreachable", "error": str(target.scrub.error(exc))}
        return _note_failure(gateway, key, failed, now)
    if not isinstance(answer, Credits):
        answer = target.scrub.reply(answer)  # the upstream's words, without the key's secret
        error = f"HTTP {answer.status}: {answer.body[:200].decode('utf-8', 'replace')}"
        if answer.status in (401, 403):  # audited as the key's change of state
            with gateway.engine.begin() as conn:
                store.mark_auth_failed(conn, key_id, error, now)
            return {**result, "result": "auth_failed", "error": error}
        return _note_failure(gateway, key, {**result, "result": "error", "error": error}, now)
    used = key.used_today + gateway.books.unapplied_tokens(key_id, today)
    values = {
        "remaining_tokens": answer.remaining_tokens,
        "remaining_credit_micros": answer.remaining_credit_micros,
        "synced_at": now,
        "synced_used_tokens": used,
        "synced_used_cost_micros": key.cost_today,
    }
    with gateway.engine.begin() as conn:
        store.record_test(conn, key_id, values)
    credit = answer.remaining_credit_micros
    return {
        **result,
        "result": "ok",
        "remaining_tokens": answer.remaining_tokens,
        "remaining_credit": None if credit is None else usd(credit),
        "synced_at": now.isoformat(),
    }


def _note_failure(gateway, key, result: dict, now: datetime) -> dict:
    """An audit entry (actor `system`) for a failed sync, once since the key's last good one
    (a provider down for a day is one entry, not one per run); the result, as it was."""
    since = key.synced_at or datetime.min.replace(tzinfo=UTC)
    target = f"key:{key.id}"
    with Session(gateway.engine) as session, session.begin():
        seen = select(func.count()).where(
            audit_t.c.action == "key.sync_failed", audit_t.c.target == target, audit_t.c.at > since
        )
        if not session.scalar(seen):
            detail = {"result": result["result"], "error": upstream_message(result["error"])}
            accounts.audit(session, SYSTEM, "key.sync_failed", now, target, detail)
    return result


def credits_sync(gateway, now: datetime, config: Mapping) -> dict:
    """The `credits-sync` job: every reporting key."""
    return sync_credits(gateway, now)

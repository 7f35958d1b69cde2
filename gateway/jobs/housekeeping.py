"""The scheduled jobs' work (F33, F23, F46): plain functions of the gateway and the time.

No job resets a counter. Provider-key usage is kept per local day (`usage_daily`), client-
key budget periods are computed from the key's creation, and `limit_reached` is derived,
never stored; so a missed midnight cannot leave a count or a status wrong, and each job
may run late, twice, or at start-up after downtime with the same outcome. What the jobs do
is the work that belongs at their instant: expire keys, re-test broken ones, drop old logs,
tidy statuses, and say in the log what came back at midnight.

Each job is `job(gateway, now, config) -> dict`: `now` is the gateway clock's (tests move
it), `config` the app's settings; the dict is a summary for the log, `job_runs` and
`GET /api/admin/jobs`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from gateway import periods
from gateway.admin import accounts
from gateway.keys import catalog, lifecycle
from gateway.keys.messages import SYSTEM
from gateway.limits import budgets
from models import Attempt, AuditEntry, ClientKey, ProviderKey, RequestLog, UsageDaily
from models.provider_keys import ACTIVE, AUTH_FAILED, COOLING_DOWN, DISABLED, EXPIRED

log = logging.getLogger(__name__)

ACTOR = "scheduler"
# Request-log rows deleted per transaction: short enough that the writer thread and the
# admin pages never wait long for SQLite's lock, and that a gevent worker's other requests
# are held up ~30 ms at a time (5,000 rows with their attempts took ~70 ms).
RETENTION_BATCH = 2000

keys_t = ProviderKey.__table__
usage_t = UsageDaily.__table__
logs_t = RequestLog.__table__
attempts_t = Attempt.__table__
audit_t = AuditEntry.__table__


# -- daily and monthly reset ------------------------------------------------------------


def daily_reset(gateway, now: datetime, config: Mapping) -> dict:
    """00:00 local: note the keys yesterday's daily limits had stopped (today's usage
    starts from nothing by itself), and store cooldowns that are over as active."""
    today = periods.local_day(now)
    yesterday = today - timedelta(days=1)
    back = _keys_at_limit(
        gateway.engine, yesterday, today, "daily_token_limit", "daily_cost_limit_micros"
    )
    cleared = clear_ended_cooldowns(gateway, now)
    _audit_once(gateway, back, "key.day_limit_ended", periods.day_start(today), now, actor=ACTOR)
    log.info(
        "daily reset (%s %s): %d provider key(s) back from limit_reached, %d cooldown(s) ended",
        today,
        periods.zone_name(),
        len(back),
        cleared,
    )
    return {"day": today.isoformat(), "back_from_limit": back, "cooldowns_ended": cleared}


def monthly_reset(gateway, now: datetime, config: Mapping) -> dict:
    """00:00 on the 1st, local: note the keys last month's monthly limits had stopped."""
    month = periods.month_start(periods.local_day(now))
    last_month = periods.month_start(month - timedelta(days=1))
    back = _keys_at_limit(
        gateway.engine, last_month, month, "monthly_token_limit", "monthly_cost_limit_micros"
    )
    since = periods.day_start(month)
    _audit_once(gateway, back, "key.month_limit_ended", since, now, actor=ACTOR)
    name = month.strftime("%Y-%m")
    log.info("monthly reset (%s %s): %d provider key(s) back", name, periods.zone_name(), len(back))
    return {"month": name, "back_from_limit": back}


def _keys_at_limit(engine: Engine, first: date, end: date, tokens: str, cost: str) -> list[int]:
    """Ids of usable keys whose usage in days [first, end) reached their token or cost
    limit of that length: the keys a new day (or month) brings back."""
    used = (
        select(
            usage_t.c.provider_key_id,
            func.sum(usage_t.c.total_tokens).label("tokens"),
            func.sum(usage_t.c.cost_micros).label("cost"),
        )
        .where(usage_t.c.day >= first, usage_t.c.day < end)
        .group_by(usage_t.c.provider_key_id)
        .subquery()
    )
    query = (
        select(keys_t.c.id)
        .join(used, used.c.provider_key_id == keys_t.c.id)
        .where(
            keys_t.c.status.in_((ACTIVE, COOLING_DOWN)),
            or_(
                and_(keys_t.c[tokens].is_not(None), used.c.tokens >= keys_t.c[tokens]),
                and_(keys_t.c[cost].is_not(None), used.c.cost >= keys_t.c[cost]),
            ),
        )
        .order_by(keys_t.c.id)
    )
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def clear_ended_cooldowns(gateway, now: datetime) -> int:
    """Store keys whose cooldown is over as active (the selector already treats them so;
    this keeps the stored status, which reports and filters read, truthful)."""
    ended = or_(keys_t.c.cooldown_until.is_(None), keys_t.c.cooldown_until <= now)
    with Session(gateway.engine) as session, session.begin():
        cooling = select(keys_t.c.id, keys_t.c.cooldown_until).where(
            keys_t.c.status == COOLING_DOWN, ended
        )
        cleared = 0
        for key_id, until in session.execute(cooling).all():
            over = lifecycle.update_for(
                lifecycle.COOLDOWN_OVER, keys_t.c.id == key_id, ended, updated_at=now
            )
            if session.execute(over).rowcount:  # not if an answer ended it meanwhile
                cleared += 1
                detail = {"until": _iso(until)} if until else None
                accounts.audit(session, ACTOR, "key.cooldown_ended", now, f"key:{key_id}", detail)
    if cleared:
        gateway.keys.forget()
    return cleared


# -- expiry (hourly) ----------------------------------------------------------------------


def expire_keys(gateway, now: datetime, config: Mapping) -> dict:
    """Store `expired` on every provider key past its `expires_at` (whatever its status:
    an expired key cannot serve, however it got there), with an audit entry each."""
    query = select(keys_t.c.id, keys_t.c.name, keys_t.c.status, keys_t.c.expires_at).where(
        keys_t.c.expires_at.is_not(None), keys_t.c.expires_at <= now, keys_t.c.status != EXPIRED
    )
    expired = []
    with Session(gateway.engine) as session, session.begin():
        for key in session.execute(query).all():
            # Conditions again: an admin may have moved the expiry since the select.
            expire = lifecycle.update_for(
                lifecycle.EXPIRE, keys_t.c.id == key.id, keys_t.c.expires_at <= now, updated_at=now
            )
            changed = session.execute(expire).rowcount
            if changed:
                expired.append(key.id)
                detail = {"name": key.name, "was": key.status, "expired_at": _iso(key.expires_at)}
                accounts.audit(session, ACTOR, "key.expire", now, f"key:{key.id}", detail)
    if expired:
        gateway.keys.forget()
        log.info("key expiry: provider key(s) %s expired", ", ".join(map(str, expired)))
    # Client keys are refused at the door once past their expiry; here they are counted.
    with gateway.engine.connect() as conn:
        client_keys = conn.execute(
            select(func.count()).where(
                ClientKey.expires_at > now - timedelta(hours=1),
                ClientKey.expires_at <= now,
                ClientKey.revoked_at.is_(None),
            )
        ).scalar_one()
    if client_keys:
        log.info("key expiry: %d client key(s) expired in the last hour", client_keys)
    return {"provider_keys_expired": expired, "client_keys_expired_last_hour": client_keys}


# -- re-validation (F23) ------------------------------------------------------------------


def revalidate_keys(gateway, now: datetime, config: Mapping, actor: str = ACTOR) -> dict:
    """Re-test auth-failed and automatically disabled keys with a real cheap call; those
    that answer come back. A key an admin disabled (its failure streak is 0) stays off.
    Active keys that serve no model yet are tested too: their models are discovered.
    `actor` is who asked (the scheduler, or a user's "Restore invalid keys")."""
    query = (
        select(keys_t.c.id, keys_t.c.status)
        .where(
            or_(
                keys_t.c.status == AUTH_FAILED,
                and_(
                    keys_t.c.status == DISABLED,
                    or_(keys_t.c.consecutive_failures > 0, keys_t.c.disabled_by == SYSTEM),
                ),
            ),
            or_(keys_t.c.expires_at.is_(None), keys_t.c.expires_at > now),
        )
        .order_by(keys_t.c.id)
    )
    with gateway.engine.connect() as conn:
        candidates = conn.execute(query).all()
    restored, failing = [], {}
    for key in candidates:
        try:
            result = gateway.tester.test(key.id)["result"]
        except Exception:  # noqa: BLE001 - one broken key must not stop the others
            log.exception("re-validation of provider key %s failed", key.id)
            failing[key.id] = "error"
            continue
        if result == "ok" and _restore(gateway, key.id, key.status, now, actor):
            restored.append(key.id)
        elif result != "ok":
            failing[key.id] = result
    if restored:
        gateway.keys.forget()
    discovered = _discover_models(gateway)
    log.info(
        "re-validation: %d key(s) tested, back: %s, still failing: %s, models found for: %s",
        len(candidates),
        restored or "none",
        failing or "none",
        discovered or "none",
    )
    return {
        "tested": len(candidates),
        "restored": restored,
        "still_failing": failing,
        "discovered": discovered,
    }


def _discover_models(gateway) -> list[int]:
    """Test active keys that serve no model yet (no models declared, none discovered: their
    test on creation could not reach the upstream, or was skipped); ids of those whose test
    now listed their models."""
    query = select(
        keys_t.c.id, keys_t.c.provider, keys_t.c.models, keys_t.c.discovered_models
    ).where(keys_t.c.status == ACTIVE, keys_t.c.discovered_models.is_(None))
    with gateway.engine.connect() as conn:
        unknown = [r.id for r in conn.execute(query) if catalog.source(r) == catalog.UNKNOWN]
    found = []
    for key_id in unknown:
        try:
            result = gateway.tester.test(key_id)
        except Exception:  # noqa: BLE001 - one broken key must not stop the others
            log.exception("model discovery of provider key %s failed", key_id)
            continue
        if result["result"] == "ok" and result["models"] is not None:
            found.append(key_id)
    return found


def _restore(gateway, key_id: int, was: str, now: datetime, actor: str = ACTOR) -> bool:
    """After a test answered: make the key active (the key test already did for an auth-failed
    one) and audit it. False when the key changed meanwhile."""
    with Session(gateway.engine) as session, session.begin():
        if was == DISABLED:
            back = lifecycle.update_for(
                lifecycle.REVALIDATED, keys_t.c.id == key_id, updated_at=now
            )
            changed = session.execute(back).rowcount
        else:
            status = session.execute(select(keys_t.c.status).where(keys_t.c.id == key_id))
            changed = status.scalar_one_or_none() == ACTIVE
        if changed:
            accounts.audit(session, actor, "key.restore", now, f"key:{key_id}", {"was": was})
    return bool(changed)


# -- log retention (F46) ------------------------------------------------------------------


# Days a conversation pin is kept unused: an upstream keeps a stored response 30 days (OpenAI's
# default), a prompt cache far less.
PIN_IDLE_DAYS = 30


def prune_logs(gateway, now: datetime, config: Mapping) -> dict:
    """Delete request-log rows (and their attempts) older than LOG_RETENTION_DAYS, a batch
    per transaction. Usage roll-ups stay, so statistics and charts keep every day; rows a
    client key's current budget period still counts stay until that period ends."""
    days = int(config.get("LOG_RETENTION_DAYS") or 0)
    # Conversation pins go idle long before a log kept for ever: pruned all the same.
    gateway.pins.prune(now, min(days, PIN_IDLE_DAYS) if days > 0 else PIN_IDLE_DAYS)
    if days <= 0:
        return {"retention_days": 0, "deleted": 0}
    cutoff = now - timedelta(days=days)
    floors = _budget_floors(gateway.engine, now, cutoff)
    old = logs_t.c.created_at < cutoff
    if floors:
        old = and_(
            old,
            or_(logs_t.c.client_key_id.is_(None), logs_t.c.client_key_id.not_in(list(floors))),
        )
    rows = _delete_batches(gateway.engine, old)
    for client_key_id, floor in floors.items():
        mine = and_(logs_t.c.client_key_id == client_key_id, logs_t.c.created_at < floor)
        rows += _delete_batches(gateway.engine, mine)
    stored = gateway.responses.prune(now, days)
    log.info(
        "log retention: %d request-log row(s) and %d stored response(s) before %s deleted",
        rows,
        stored,
        _iso(cutoff),
    )
    return {
        "retention_days": days,
        "cutoff": _iso(cutoff),
        "deleted": rows,
        "stored_responses_deleted": stored,
    }


def _budget_floors(engine: Engine, now: datetime, cutoff: datetime) -> dict[int, datetime]:
    """Client key id → start of its current budget period, for keys whose period began
    before the cutoff: their spend is recounted from the log (budgets, alerts)."""
    query = select(ClientKey.id, ClientKey.budget_duration, ClientKey.created_at).where(
        ClientKey.max_budget_micros.is_not(None), ClientKey.revoked_at.is_(None)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    floors = {}
    for row in rows:
        start = budgets.period(row.created_at, row.budget_duration, now)[0]
        if start < cutoff:
            floors[row.id] = start
    return floors


def _delete_batches(engine: Engine, where) -> int:
    """Delete the log rows matching `where`, RETENTION_BATCH at a time; returns how many."""
    total = 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(logs_t.c.id)
                    .where(where)
                    .order_by(logs_t.c.created_at)
                    .limit(RETENTION_BATCH)
                ).scalars()
            )
            if not ids:
                return total
            conn.execute(delete(attempts_t).where(attempts_t.c.request_log_id.in_(ids)))
            conn.execute(delete(logs_t).where(logs_t.c.id.in_(ids)))
        total += len(ids)
        time.sleep(0)  # under gevent: let the worker's requests run between batches


# -- budget alerts (F36) ------------------------------------------------------------------


def budget_alerts(gateway, now: datetime, config: Mapping) -> dict:
    """Check every client key's budget against the alert thresholds (gateway/ledger/alerts.py),
    when alerts are set up (KEYRELAY_ALERT_WEBHOOK_URL); and note in the audit log each
    provider key that reached its daily or monthly limit since the last run."""
    reached = audit_limits_reached(gateway, now)
    alerts = getattr(gateway, "alerts", None)
    if alerts is None:
        return {"sent": 0, "skipped": "budget alerts are not set up", "limits_reached": reached}
    return {"sent": alerts.check_all(now), "limits_reached": reached}


# A provider key's limits by period: (its word in the audit, token column, cost column).
_LIMITS = (
    ("day", "daily_token_limit", "daily_cost_limit_micros"),
    ("month", "monthly_token_limit", "monthly_cost_limit_micros"),
)


def audit_limits_reached(gateway, now: datetime) -> list[int]:
    """An audit entry (actor `system`) for each provider key at its daily or monthly limit
    whose reaching it this period is not noted yet; ids of the keys noted. The limit is
    derived when keys are chosen (never stored), so this is where it becomes history."""
    today = periods.local_day(now)
    noted = []
    for period, tokens, cost in _LIMITS:
        first = today if period == "day" else periods.month_start(today)
        end = today + timedelta(days=1) if period == "day" else periods.next_month(today)
        at_limit = _keys_at_limit(gateway.engine, first, end, tokens, cost)
        until = {"until": periods.day_start(end).isoformat()}
        action = f"key.{period}_limit_reached"
        noted += _audit_once(gateway, at_limit, action, periods.day_start(first), now, until)
    return noted


def _audit_once(gateway, key_ids, action, since, now, detail=None, actor=SYSTEM) -> list[int]:
    """An audit entry `action` for each key that has none since `since` (a job may run twice
    or late: the log says each change once); the ids noted."""
    if not key_ids:
        return []
    noted = []
    with Session(gateway.engine) as session, session.begin():
        known = select(audit_t.c.target).where(audit_t.c.action == action, audit_t.c.at >= since)
        seen = set(session.scalars(known))
        for key_id in key_ids:
            if f"key:{key_id}" not in seen:
                accounts.audit(session, actor, action, now, f"key:{key_id}", detail)
                noted.append(key_id)
    return noted


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None

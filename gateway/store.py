"""Database reads and writes on the proxy's path, in SQLAlchemy Core (no ORM overhead)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.keys import catalog, lifecycle
from gateway.keys.messages import SYSTEM, upstream_message
from models import Attempt, AuditEntry, Profile, ProviderKey, RequestLog, UsageDaily
from models.provider_keys import (
    ACTIVE,
    AUTH_FAILED,
    SECRET_UNREADABLE,
    STATUS_SENTENCES,
)

keys_t = ProviderKey.__table__
usage_t = UsageDaily.__table__
logs_t = RequestLog.__table__
attempts_t = Attempt.__table__
profiles_t = Profile.__table__
audit_t = AuditEntry.__table__

USAGE_COUNTERS = (
    "requests",
    "successes",
    "failures",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "estimated_tokens",
    "cost_micros",
)


@dataclass
class KeyRow:
    """A provider key as the selector sees it: config, health, limits and usage.

    Usage is by local day and month (KEYRELAY_TIMEZONE); costs are micro-dollars.
    """

    id: int
    provider: str
    name: str
    base_url: str
    secret_encrypted: bytes
    models: list
    discovered_models: list | None
    daily_token_limit: int | None
    status: str
    cooldown_until: datetime | None
    consecutive_failures: int
    last_used_at: datetime | None
    used_today: int
    monthly_token_limit: int | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    model_limits: dict | None = None
    daily_cost_limit_micros: int | None = None
    monthly_cost_limit_micros: int | None = None
    total_cost_limit_micros: int | None = None
    expires_at: datetime | None = None
    used_month: int = 0
    cost_today: int = 0
    cost_month: int = 0
    cost_total: int = 0
    responses_api: bool | None = None
    weight: int | None = None
    priority: int | None = None
    is_default: bool | None = None
    options: dict | None = None
    remaining_tokens: int | None = None
    remaining_credit_micros: int | None = None
    synced_at: datetime | None = None
    synced_used_tokens: int | None = None
    synced_used_cost_micros: int | None = None
    unserved_models: list | None = None
    usage_day: date | None = None  # the local day of used_today (set by load_keys)

    def serves(self, model: str) -> bool:
        """Whether this key serves the model (gateway/keys/catalog.py)."""
        return catalog.serves(self, model)

    @property
    def rate_limited(self) -> bool:
        """Whether the key has any sliding-window limit (RPM/TPM, per key or per model)."""
        return bool(self.rpm_limit or self.tpm_limit or self.model_limits)


# Milliseconds a connection waits for another's write lock (KEYRELAY_DB_BUSY_TIMEOUT);
# set once by create_app, like the time zone.
_busy_timeout_ms = 10_000


def set_busy_timeout(seconds: float) -> None:
    global _busy_timeout_ms
    _busy_timeout_ms = max(0, round(seconds * 1000))


def configure_sqlite(dbapi_connection) -> None:
    """WAL: readers never wait for the writer, and a commit survives a killed process.

    Every connection waits up to KEYRELAY_DB_BUSY_TIMEOUT (10 s) for a lock instead of
    failing at once; after that the write fails whole (the admin gets a 503).
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(_busy_timeout_ms)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def configure_postgresql(dbapi_connection) -> None:
    """A statement waits up to KEYRELAY_DB_BUSY_TIMEOUT for a lock another session holds,
    then fails (the admin gets a 503), as on SQLite; committed, so the pool keeps it."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"SET lock_timeout = {int(_busy_timeout_ms)}")
    cursor.close()
    dbapi_connection.commit()


_FIND_PROFILE = select(
    profiles_t.c.id,
    profiles_t.c.strategy,
    profiles_t.c.wait_for_key_seconds,
    profiles_t.c.use_paid_models,
).where(profiles_t.c.name == bindparam("name"))


class ProfileRow(NamedTuple):
    """What a request needs of its profile."""

    id: int
    strategy: str | None
    wait_for_key_seconds: int | None
    use_paid_models: bool | None


def find_profile(conn: Connection, name: str) -> ProfileRow | None:
    """The named profile, or None."""
    row = conn.execute(_FIND_PROFILE, {"name": name}).first()
    return None if row is None else ProfileRow(*row)


def _keys_query(by_profile: bool):
    """Keys with this day's and month's tokens and cost (and all-time cost for keys with a
    total cost limit); built once per shape so every request hits the SQL cache."""
    today = usage_t.c.day == bindparam("today")
    used = select(
        usage_t.c.provider_key_id,
        func.sum(case((today, usage_t.c.total_tokens), else_=0)).label("used_today"),
        func.sum(usage_t.c.total_tokens).label("used_month"),
        func.sum(case((today, usage_t.c.cost_micros), else_=0)).label("cost_today"),
        func.sum(usage_t.c.cost_micros).label("cost_month"),
    ).where(usage_t.c.day >= bindparam("month_start"))
    if by_profile:
        used = used.where(usage_t.c.profile_id == bindparam("profile_id"))
    used = used.group_by(usage_t.c.provider_key_id).subquery()
    # Only keys with a total cost limit pay for summing their whole history.
    all_time = (
        select(func.coalesce(func.sum(usage_t.c.cost_micros), 0))
        .where(usage_t.c.provider_key_id == keys_t.c.id)
        .scalar_subquery()
    )
    query = select(
        keys_t.c.id,
        keys_t.c.provider,
        keys_t.c.name,
        keys_t.c.base_url,
        keys_t.c.secret_encrypted,
        keys_t.c.models,
        keys_t.c.discovered_models,
        keys_t.c.daily_token_limit,
        keys_t.c.status,
        keys_t.c.cooldown_until,
        keys_t.c.consecutive_failures,
        keys_t.c.last_used_at,
        func.coalesce(used.c.used_today, 0).label("used_today"),
        keys_t.c.monthly_token_limit,
        keys_t.c.rpm_limit,
        keys_t.c.tpm_limit,
        keys_t.c.model_limits,
        keys_t.c.daily_cost_limit_micros,
        keys_t.c.monthly_cost_limit_micros,
        keys_t.c.total_cost_limit_micros,
        keys_t.c.expires_at,
        func.coalesce(used.c.used_month, 0).label("used_month"),
        func.coalesce(used.c.cost_today, 0).label("cost_today"),
        func.coalesce(used.c.cost_month, 0).label("cost_month"),
        case((keys_t.c.total_cost_limit_micros.is_(None), 0), else_=all_time).label("cost_total"),
        keys_t.c.responses_api,
        keys_t.c.weight,
        keys_t.c.priority,
        keys_t.c.is_default,
        keys_t.c.options,
        keys_t.c.remaining_tokens,
        keys_t.c.remaining_credit_micros,
        keys_t.c.synced_at,
        keys_t.c.synced_used_tokens,
        keys_t.c.synced_used_cost_micros,
        keys_t.c.unserved_models,
    ).select_from(keys_t.outerjoin(used, used.c.provider_key_id == keys_t.c.id))
    if by_profile:
        return query.where(keys_t.c.profile_id == bindparam("profile_id")).order_by(keys_t.c.id)
    return query.where(keys_t.c.id == bindparam("key_id"))


_KEYS_OF_PROFILE = _keys_query(by_profile=True)
_KEY_BY_ID = _keys_query(by_profile=False)


def load_keys(conn: Connection, profile_id: int, today: date) -> list[KeyRow]:
    """Every provider key of the profile with its usage today and this month."""
    params = {"profile_id": profile_id, "today": today, "month_start": today.replace(day=1)}
    return [KeyRow(*row, usage_day=today) for row in conn.execute(_KEYS_OF_PROFILE, params)]


def load_key(conn: Connection, key_id: int, today: date) -> KeyRow | None:
    """One provider key with its usage today and this month."""
    params = {"key_id": key_id, "today": today, "month_start": today.replace(day=1)}
    row = conn.execute(_KEY_BY_ID, params).first()
    return None if row is None else KeyRow(*row, usage_day=today)


# Models a key's upstream said it lacks, remembered per key at most: a `*` key asked for
# ever new names would otherwise grow its row without end.
UNSERVED_LIMIT = 256


def mark_unserved(conn: Connection, key_id: int, model: str, now: datetime) -> None:
    """Note that the key's upstream answered it has no such model: the key is not asked
    for it again until a test lists the upstream's models (or the admin sets them)."""
    # The row is locked (written) before it is read: another worker noting another model
    # at the same moment waits, then reads this one's list (else one of them is lost).
    locked = update(keys_t).where(keys_t.c.id == key_id).values(updated_at=keys_t.c.updated_at)
    if not conn.execute(locked).rowcount:
        return
    row = conn.execute(select(keys_t.c.unserved_models).where(keys_t.c.id == key_id)).first()
    unserved = list(row[0] or [])
    if model in unserved:
        return
    # Oldest first; at the bound the oldest is forgotten, so the key never stops learning.
    # Forgetting costs one more "model not found" (the request moves on to the next key,
    # which notes it again); not learning would cost one on every request for a new name.
    unserved = [*unserved, model][-UNSERVED_LIMIT:]
    conn.execute(
        update(keys_t).where(keys_t.c.id == key_id).values(unserved_models=unserved, updated_at=now)
    )


def cool_down(
    conn: Connection, key_id: int, until: datetime, error: str, now: datetime | None = None
) -> bool:
    """Take a rate-limited key out of the pool until `until` (unless an admin disabled it).
    A new cooldown (not one made longer) is audited with actor `system`. True if it is new."""
    before = conn.execute(
        select(keys_t.c.status, keys_t.c.cooldown_until).where(keys_t.c.id == key_id)
    ).first()
    changed = conn.execute(
        lifecycle.update_for(
            lifecycle.RATE_LIMITED,
            keys_t.c.id == key_id,
            cooldown_until=until,
            last_error=error,
            updated_at=until,
        )
    ).rowcount
    now = now or until
    ended = before is not None and (before.cooldown_until is None or before.cooldown_until <= now)
    new = bool(changed) and (before.status == ACTIVE or ended)
    if new:
        detail = {"until": until.isoformat(), "error": upstream_message(error)}
        _audit(conn, "key.cooldown", key_id, now, detail)
    return new


def mark_auth_failed(conn: Connection, key_id: int, error: str, now: datetime) -> bool:
    """Take a key the upstream rejected out of the pool until it is re-validated; the change
    (not a repeat of it) is audited with actor `system`. True if the key changed status."""
    refused = lifecycle.update_for(
        lifecycle.REFUSED,
        keys_t.c.id == key_id,
        last_error=error,
        disabled_by=SYSTEM,
        disabled_at=now,
        updated_at=now,
    )
    changed = conn.execute(refused).rowcount
    if changed:
        _audit(conn, "key.auth_failed", key_id, now, {"error": upstream_message(error)})
    else:
        conn.execute(
            update(keys_t)
            .where(keys_t.c.id == key_id, keys_t.c.status == AUTH_FAILED)
            .values(last_error=error, updated_at=now)
        )
    return bool(changed)


def _audit(conn: Connection, action: str, key_id: int, now: datetime, detail: dict) -> None:
    """An audit entry for a change KeyRelay made to a key by itself (actor `system`)."""
    conn.execute(
        audit_t.insert().values(
            at=now, actor=SYSTEM, action=action, target=f"key:{key_id}", detail=detail
        )
    )


def audit_circuit(
    conn: Connection, key: KeyRow, upstream: str, change: str, now: datetime, state
) -> None:
    """An audit entry (actor `system`) for the circuit of a key's upstream opened or closed."""
    detail = {"key": key.id, "key_name": key.name}
    if state is not None:
        detail["until"] = state["until"]
    conn.execute(
        audit_t.insert().values(
            at=now,
            actor=SYSTEM,
            action=f"circuit.{change}",
            target=f"upstream:{upstream}",
            detail=detail,
        )
    )


def mark_secret_unreadable(conn: Connection, key_id: int, ciphertext: bytes, now) -> bool:
    """Take a key whose secret cannot be decrypted out of the pool until an admin re-enters
    it; only while it still holds that ciphertext (not if the secret was just replaced), and
    not over `disabled` or `secret_insecure`. True if the row changed."""
    result = conn.execute(
        lifecycle.update_for(
            lifecycle.SECRET_LOST,
            keys_t.c.id == key_id,
            keys_t.c.secret_encrypted == ciphertext,
            last_error=STATUS_SENTENCES[SECRET_UNREADABLE],
            updated_at=now,
        )
    )
    return result.rowcount > 0


def count_failure(conn: Connection, key_id: int, threshold: int, error: str, now) -> bool:
    """One more consecutive failure; at the threshold the key is disabled (by `system`,
    audited). True if this failure disabled it."""
    conn.execute(
        update(keys_t)
        .where(keys_t.c.id == key_id)
        .values(
            consecutive_failures=keys_t.c.consecutive_failures + 1,
            last_error=error,
            updated_at=now,
        )
    )
    streak = lifecycle.update_for(
        lifecycle.FAILURE_STREAK,
        keys_t.c.id == key_id,
        keys_t.c.consecutive_failures >= threshold,
        disabled_by=SYSTEM,
        disabled_at=now,
    )
    disabled = conn.execute(streak).rowcount
    if disabled:
        detail = {"failures_in_a_row": threshold, "last_error": upstream_message(error)}
        _audit(conn, "key.auto_disable", key_id, now, detail)
    return bool(disabled)


def record_test(conn: Connection, key_id: int, values: dict) -> None:
    """Store what a key test (or a usage sync) found (status, models, credits, error)."""
    conn.execute(update(keys_t).where(keys_t.c.id == key_id).values(**values))


_MARK_SUCCESS = (
    update(keys_t)
    .where(keys_t.c.id == bindparam("key_id"))
    .values(
        last_used_at=bindparam("now"),
        consecutive_failures=0,
        last_error=None,  # an answer clears a stale error
        **lifecycle.ANSWERED_VALUES,  # back from an ended cooldown
    )
)


def mark_success(conn: Connection, key_id: int, now: datetime) -> None:
    """A key that answered: used now, failure streak over, back from an expired cooldown."""
    conn.execute(_MARK_SUCCESS, {"key_id": key_id, "now": now})


def _upsert_usage(insert):
    stmt = insert(usage_t)
    return stmt.on_conflict_do_update(
        index_elements=["day", "profile_id", "provider_key_id", "model"],
        set_={name: usage_t.c[name] + stmt.excluded[name] for name in USAGE_COUNTERS},
    )


_UPSERT_USAGE = {
    "sqlite": _upsert_usage(sqlite.insert),
    "postgresql": _upsert_usage(postgresql.insert),
}
_INSERT_LOG = logs_t.insert()
_INSERT_ATTEMPT = attempts_t.insert()


def add_usage(conn: Connection, row: dict) -> None:
    """Add to the (day, profile, key, model) roll-up, creating the row on first use."""
    conn.execute(_UPSERT_USAGE[conn.dialect.name], row)


def insert_log(conn: Connection, log: dict, attempts: list[dict]) -> int:
    """Insert a request-log row and its attempts; returns the row id."""
    log_id = conn.execute(_INSERT_LOG, log).inserted_primary_key[0]
    if attempts:
        for attempt in attempts:
            attempt["request_log_id"] = log_id
        conn.execute(_INSERT_ATTEMPT, attempts)
    return log_id


def recent_windows(conn: Connection, since) -> dict[str, list[tuple[int, int, int]]]:
    """The rate windows the request log gives since `since` (the last minute): per client
    key (`ck:<id>`) and serving provider key (`pk:<id>`, `pk:<id>:<model>`), the requests
    and tokens of each second, as [(second, requests, tokens)]. A request the client key's
    own limits refused (a 429 no key served) took no place and is left out."""
    log = RequestLog.__table__.c
    rows = conn.execute(
        select(
            log.created_at,
            log.client_key_id,
            log.provider_key_id,
            log.model,
            log.status_code,
            log.input_tokens + log.output_tokens,
        ).where(log.created_at >= since)
    ).all()
    counts: dict[str, dict[int, list[int]]] = {}

    def add(scope: str, second: int, used: int) -> None:
        entry = counts.setdefault(scope, {}).setdefault(second, [0, 0])
        entry[0] += 1
        entry[1] += used

    for created, client_key, provider_key, model, status, used in rows:
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        second, used = int(created.timestamp()), int(used or 0)
        if client_key is not None and not (status == 429 and provider_key is None):
            add(f"ck:{client_key}", second, used)
        if provider_key:
            add(f"pk:{provider_key}", second, used)
            if model:
                add(f"pk:{provider_key}:{model}", second, used)
    return {
        scope: [(second, n, used) for second, (n, used) in sorted(seconds.items())]
        for scope, seconds in counts.items()
    }


def client_key_spend(conn: Connection, client_key_id: int, start, end) -> int:
    """Micro-dollars a client key's requests cost in [start, end) (end None: open)."""
    log = RequestLog.__table__.c
    query = select(func.coalesce(func.sum(log.cost_micros), 0)).where(
        log.client_key_id == client_key_id, log.created_at >= start
    )
    if end is not None:
        query = query.where(log.created_at < end)
    return int(conn.execute(query).scalar_one())

"""Database reads and writes on the proxy's path, in SQLAlchemy Core (no ORM overhead)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Connection, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from models import Attempt, Profile, ProviderKey, RequestLog, UsageDaily
from models.provider_keys import ACTIVE, AUTH_FAILED, COOLING_DOWN, DISABLED

keys_t = ProviderKey.__table__
usage_t = UsageDaily.__table__
logs_t = RequestLog.__table__
attempts_t = Attempt.__table__
profiles_t = Profile.__table__

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
    """A provider key as the selector sees it: config, health and today's usage."""

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

    def serves(self, model: str) -> bool:
        """Whether this key is configured to serve the model."""
        return "*" in self.models or model in self.models


def find_profile(conn: Connection, name: str) -> tuple[int, str | None] | None:
    """(id, strategy) of the named profile, or None."""
    row = conn.execute(
        select(profiles_t.c.id, profiles_t.c.strategy).where(profiles_t.c.name == name)
    ).first()
    return None if row is None else (row.id, row.strategy)


def load_keys(
    conn: Connection, profile_id: int | None, today: date, key_id: int | None = None
) -> list[KeyRow]:
    """Provider keys of a profile (or the one key) with the tokens each used today."""
    used = select(usage_t.c.provider_key_id, func.sum(usage_t.c.total_tokens).label("used"))
    used = used.where(usage_t.c.day == today)
    if profile_id is not None:
        used = used.where(usage_t.c.profile_id == profile_id)
    used = used.group_by(usage_t.c.provider_key_id).subquery()
    query = (
        select(
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
            func.coalesce(used.c.used, 0).label("used_today"),
        )
        .select_from(keys_t.outerjoin(used, used.c.provider_key_id == keys_t.c.id))
        .order_by(keys_t.c.id)
    )
    if profile_id is not None:
        query = query.where(keys_t.c.profile_id == profile_id)
    if key_id is not None:
        query = query.where(keys_t.c.id == key_id)
    return [KeyRow(**row._mapping) for row in conn.execute(query)]


def cool_down(conn: Connection, key_id: int, until: datetime, error: str) -> None:
    """Take a rate-limited key out of the pool until `until` (unless an admin disabled it)."""
    conn.execute(
        update(keys_t)
        .where(keys_t.c.id == key_id, keys_t.c.status.in_((ACTIVE, COOLING_DOWN)))
        .values(status=COOLING_DOWN, cooldown_until=until, last_error=error, updated_at=until)
    )


def mark_auth_failed(conn: Connection, key_id: int, error: str, now: datetime) -> None:
    """Take a key the upstream rejected out of the pool until it is re-validated."""
    conn.execute(
        update(keys_t)
        .where(keys_t.c.id == key_id, keys_t.c.status != DISABLED)
        .values(status=AUTH_FAILED, last_error=error, updated_at=now)
    )


def count_failure(conn: Connection, key_id: int, threshold: int, error: str, now) -> None:
    """One more consecutive failure; at the threshold the key is disabled."""
    failures = keys_t.c.consecutive_failures + 1
    conn.execute(
        update(keys_t)
        .where(keys_t.c.id == key_id)
        .values(
            consecutive_failures=failures,
            status=case((failures >= threshold, DISABLED), else_=keys_t.c.status),
            last_error=error,
            updated_at=now,
        )
    )


def record_test(conn: Connection, key_id: int, values: dict) -> None:
    """Store what a key test found (status, discovered models, error)."""
    conn.execute(update(keys_t).where(keys_t.c.id == key_id).values(**values))


def mark_success(conn: Connection, key_id: int, now: datetime) -> None:
    """A key that answered: used now, failure streak over, back from an expired cooldown."""
    conn.execute(
        update(keys_t)
        .where(keys_t.c.id == key_id)
        .values(
            last_used_at=now,
            consecutive_failures=0,
            status=case((keys_t.c.status == COOLING_DOWN, ACTIVE), else_=keys_t.c.status),
            cooldown_until=case(
                (keys_t.c.status == COOLING_DOWN, None), else_=keys_t.c.cooldown_until
            ),
        )
    )


def _insert_for(conn: Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def add_usage(conn: Connection, key: dict, counts: dict) -> None:
    """Add to the (day, profile, key, model) roll-up, creating the row on first use."""
    stmt = _insert_for(conn)(usage_t).values(**key, **counts)
    stmt = stmt.on_conflict_do_update(
        index_elements=["day", "profile_id", "provider_key_id", "model"],
        set_={name: usage_t.c[name] + stmt.excluded[name] for name in USAGE_COUNTERS},
    )
    conn.execute(stmt)


def insert_log(conn: Connection, log: dict, attempts: list[dict]) -> int:
    """Insert a request-log row and its attempts; returns the row id."""
    log_id = conn.execute(logs_t.insert().values(**log)).inserted_primary_key[0]
    if attempts:
        conn.execute(attempts_t.insert(), [{**a, "request_log_id": log_id} for a in attempts])
    return log_id

"""The provider key state machine: the table of transitions, its guarded SQL on a real
SQLite file, and a guard that no module but gateway/keys/lifecycle.py writes a key's status."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from gateway.keys import lifecycle as lc
from gateway.keys.messages import SYSTEM
from models import Profile, ProviderKey
from models.provider_keys import (
    ACTIVE,
    AUTH_FAILED,
    COOLING_DOWN,
    DISABLED,
    EXPIRED,
    SECRET_INSECURE,
    SECRET_UNREADABLE,
    STORED_STATUSES,
)

A, C, F, D, E, U, X = (
    ACTIVE,
    COOLING_DOWN,
    AUTH_FAILED,
    DISABLED,
    EXPIRED,
    SECRET_UNREADABLE,
    SECRET_INSECURE,
)
ORDER = (A, C, F, D, E, U, X)
# Each event from each stored state (in ORDER): the state it makes, or None (refused).
EXPECTED = {
    lc.RATE_LIMITED: (C, C, None, None, None, None, None),
    lc.ANSWERED: (None, A, None, None, None, None, None),
    lc.REFUSED: (F, F, None, None, F, F, F),
    lc.FAILURE_STREAK: (D, D, D, None, D, D, D),
    lc.SECRET_LOST: (U, U, U, None, U, None, None),
    lc.SECRET_EXPOSED: (X, X, X, X, X, X, None),
    lc.SECRET_READABLE: (None, None, None, None, None, A, None),
    lc.COOLDOWN_OVER: (None, A, None, None, None, None, None),
    lc.EXPIRE: (E, E, E, E, None, E, E),
    # A passing test never clears what an admin or the expiry set, nor an insecure secret,
    # nor a cooldown the upstream asked for.
    lc.TEST_PASSED: (None, None, A, None, None, A, None),
    lc.REVALIDATED: (None, None, None, A, None, None, None),
    # Enable does not resurrect an expired key, nor one whose secret must be re-entered.
    lc.ENABLE: (A, A, A, A, None, None, None),
    lc.DISABLE: (D, D, D, D, D, D, D),
    lc.RESET: (None, A, A, None, None, None, None),
    lc.NEW_EXPIRY: (None, None, None, None, A, None, None),
    lc.SECRET_REENTERED: (None, None, None, None, None, A, A),
}


def test_every_event_and_every_stored_state_is_covered():
    assert set(EXPECTED) == set(lc.TRANSITIONS)
    assert set(ORDER) == set(STORED_STATUSES)


@pytest.mark.parametrize("event", sorted(EXPECTED))
def test_the_table_gives_each_events_state_from_each_state(event):
    got = tuple(lc.next_state(event, status) for status in ORDER)
    assert got == EXPECTED[event]


def test_limit_reached_is_never_a_target_nor_a_stored_state():
    assert all(rule.target in STORED_STATUSES for rule in lc.TRANSITIONS.values())
    assert "limit_reached" not in STORED_STATUSES


def test_an_event_refuses_fields_it_does_not_own():
    with pytest.raises(ValueError, match="cooldown_until"):
        lc.changes(lc.EXPIRE, cooldown_until=None)


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    ProviderKey.metadata.create_all(engine)
    yield engine
    engine.dispose()


def _key(engine, status: str, **fields) -> int:
    from sqlalchemy.orm import Session

    with Session(engine) as session, session.begin():
        profile = session.scalar(select(Profile).where(Profile.name == "p"))
        if profile is None:
            profile = Profile(name="p", created_at=NOW)
        key = ProviderKey(
            profile=profile,
            provider="openai",
            name=f"k-{status}-{len(fields)}",
            secret_encrypted=b"x",
            secret_masked="sk-…",
            secret_fingerprint=f"f{status}{fields}",
            base_url="https://api.example",
            models=[],
            status=status,
            consecutive_failures=fields.pop("consecutive_failures", 3),
            cooldown_until=NOW + timedelta(minutes=5),
            disabled_by=fields.pop("disabled_by", SYSTEM),
            disabled_at=NOW,
            last_error="old",
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(key)
        session.flush()
        return key.id


def _row(engine, key_id):
    with engine.connect() as conn:
        return conn.execute(select(lc.keys_t).where(lc.keys_t.c.id == key_id)).one()


@pytest.mark.parametrize("event", sorted(EXPECTED))
def test_the_guarded_update_moves_only_allowed_rows_and_clears_its_fields(engine, event):
    ids = {status: _key(engine, status) for status in ORDER}
    rule = lc.TRANSITIONS[event]
    given = {field: ("now-" + field if field == "last_error" else NOW) for field in rule.sets}
    if "disabled_by" in given:
        given["disabled_by"] = "admin"
    with engine.begin() as conn:
        moved = conn.execute(lc.update_for(event, **given)).rowcount
    assert moved == sum(1 for s in EXPECTED[event] if s is not None)
    for status, expected in zip(ORDER, EXPECTED[event], strict=True):
        row = _row(engine, ids[status])
        if expected is None:
            assert (row.status, row.last_error, row.consecutive_failures) == (status, "old", 3)
            continue
        assert row.status == expected
        for field in rule.clears:
            assert getattr(row, field) in (None, 0), field
        if "disabled_by" in given:
            assert row.disabled_by == "admin"


def test_apply_on_an_orm_key_follows_the_same_table():
    for event, targets in EXPECTED.items():
        for status, expected in zip(ORDER, targets, strict=True):
            key = ProviderKey(status=status, last_error="old", consecutive_failures=3)
            rule = lc.TRANSITIONS[event]
            given = dict.fromkeys(rule.sets, NOW)
            given.pop("last_error", None)
            assert lc.apply(event, key, NOW, **given) is (expected is not None)
            assert key.status == (expected or status)


def test_reset_brings_back_what_the_gateway_took_out_and_keeps_an_admins_disable():
    by_system = ProviderKey(status=DISABLED, disabled_by=SYSTEM, consecutive_failures=5)
    by_admin = ProviderKey(status=DISABLED, disabled_by="ana", consecutive_failures=0)
    expired = ProviderKey(status=EXPIRED, consecutive_failures=2, cooldown_until=NOW)
    assert lc.reset(by_system, NOW, "ana") and by_system.status == ACTIVE
    assert by_system.disabled_by is None and by_system.consecutive_failures == 0
    assert not lc.reset(by_admin, NOW, "ana") and by_admin.status == DISABLED
    assert by_admin.disabled_by == "ana"
    assert not lc.reset(expired, NOW, "ana") and expired.status == EXPIRED
    assert (expired.cooldown_until, expired.consecutive_failures) == (None, 0)


def test_the_success_path_sql_is_the_answered_rule(engine):
    cooling, failed = _key(engine, COOLING_DOWN), _key(engine, AUTH_FAILED)
    sql = "UPDATE provider_keys SET " + lc.ANSWERED_SQL + " WHERE id = :id"
    with engine.begin() as conn:
        for key_id in (cooling, failed):
            conn.exec_driver_sql(sql.replace(":id", str(key_id)))
    assert (_row(engine, cooling).status, _row(engine, cooling).cooldown_until) == (ACTIVE, None)
    assert _row(engine, failed).status == AUTH_FAILED
    assert _row(engine, failed).cooldown_until is not None


# -- the guard: no status write on a provider key outside lifecycle.py ---------------------

ROOT = Path(__file__).resolve().parents[2]
_STATES = (
    r"(?:ACTIVE|COOLING_DOWN|AUTH_FAILED|DISABLED|EXPIRED|LIMIT_REACHED|SECRET_\w+|case\("
    r"|[\"'](?:active|cooling_down|auth_failed|disabled|expired|secret_\w+)[\"'])"
)
STATUS_WRITE = re.compile(
    "|".join(
        (
            r"\b(?:key|row|k)\.status\s*=(?!=)",  # key.status = …
            r"^\s*(?:key|row|k)\.status\s*,[^=]*=(?!=)",  # key.status, x = …
            rf"(?<![\w.])status=(?!=)\s*{_STATES}",  # status=ACTIVE as a keyword
            r"\bvalues(?:\.update)?\(\s*status=",  # .values(status=…), values.update(status=…)
            r"\bstatus\s*=\s*CASE\b",  # raw SQL
            rf"[\"']status[\"']\s*:\s*{_STATES}",  # {"status": "active"}
        )
    )
)
# An in-memory copy of rows the caller has just stored as unreadable (no write).
ALLOWED = {("proxy/attempts.py", "replace(key, status=SECRET_UNREADABLE)")}


def status_writes(root: Path) -> list[str]:
    """`file:line: text` of every line under `root` that writes a provider key's status."""
    found = []
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root).as_posix()
        if name == "keys/lifecycle.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if STATUS_WRITE.search(line) and not any(
                name == where and text in line for where, text in ALLOWED
            ):
                found.append(f"{name}:{number}: {line.strip()}")
    return found


@pytest.mark.parametrize("folder", ["gateway", "blueprints", "scripts"])
def test_no_module_but_lifecycle_writes_a_key_status(folder):
    assert status_writes(ROOT / folder) == []


@pytest.mark.parametrize(
    "line",
    [
        "        .values(status=COOLING_DOWN, cooldown_until=until)",
        '                values.update(status="active", cooldown_until=None)',
        "        key.status = ACTIVE  # a new expiry",
        "            key.status, key.last_error = ACTIVE, None",
        "        status=case((keys_t.c.status == COOLING_DOWN, ACTIVE), else_=keys_t.c.status),",
        "    \"status = CASE WHEN status = 'cooling_down' THEN 'active' ELSE status END, \"",
        "                values.update(status=status, last_error=None)",
    ],
)
def test_the_guard_catches_the_writes_it_replaced(tmp_path, line):
    (tmp_path / "mod.py").write_text(line + "\n")
    assert len(status_writes(tmp_path)) == 1


@pytest.mark.parametrize(
    "line",
    [
        "        if key.status == SECRET_INSECURE:",
        "        self.status = status_code_of(reply)",
        "    status = selection.effective_status(key, now)",
        '        "status": row.status(now),',
    ],
)
def test_the_guard_lets_reads_pass(tmp_path, line):
    (tmp_path / "mod.py").write_text(line + "\n")
    assert status_writes(tmp_path) == []

"""The one state machine of a provider key: every change of its stored `status` is made here.

    (created) ──> active ──rate_limited──> cooling_down ──answered / cooldown_over /
                    │  ▲                        │                         reset──> active
                    │  └────────────────────────┘
                    ├──refused──────────> auth_failed ──test_passed / reset / enable──> active
                    ├──failure_streak───> disabled (by system) ──revalidated / reset──> active
                    ├──disable──────────> disabled (by a person) ──enable──> active
                    ├──expire───────────> expired ──new_expiry──> active
                    ├──secret_lost──────> secret_unreadable ──secret_readable /
                    │                                          secret_reentered /
                    │                                          test_passed──> active
                    └──secret_exposed───> secret_insecure ──secret_reentered──> active

Who triggers what: the proxy on an upstream's outcome (rate_limited, answered, refused,
failure_streak, secret_lost), the scheduler's jobs (cooldown_over, expire, revalidated;
the usage sync: refused), the key test (test_passed, refused), the start-up secret check
(secret_lost, secret_exposed, secret_readable) and an admin (enable, disable, reset,
new_expiry, secret_reentered). `limit_reached` is never stored: gateway/keys/selection.py
derives it (and an ended cooldown, a passed expiry) from the row at read time.

`TRANSITIONS` is the table; `update_for` builds the guarded SQL UPDATE (WHERE status IN the
allowed from-states) for callers on a Connection, `apply` applies the same rule to an ORM
object. An event from a state it does not list changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, update

from gateway.keys.messages import SYSTEM
from models import ProviderKey
from models.provider_keys import (
    ACTIVE,
    AUTH_FAILED,
    COOLING_DOWN,
    DISABLED,
    EXPIRED,
    SECRET_INSECURE,
    SECRET_STATUSES,
    SECRET_UNREADABLE,
    STORED_STATUSES,
)

keys_t = ProviderKey.__table__
INITIAL = ACTIVE  # a new key serves at once

# Events
RATE_LIMITED = "rate_limited"
ANSWERED = "answered"
REFUSED = "refused"
FAILURE_STREAK = "failure_streak"
SECRET_LOST = "secret_lost"
SECRET_EXPOSED = "secret_exposed"
SECRET_READABLE = "secret_readable"
COOLDOWN_OVER = "cooldown_over"
EXPIRE = "expire"
TEST_PASSED = "test_passed"
REVALIDATED = "revalidated"
ENABLE = "enable"
DISABLE = "disable"
RESET = "reset"
NEW_EXPIRY = "new_expiry"
SECRET_REENTERED = "secret_reentered"

# What "cleared" means per field.
_CLEARED = {
    "cooldown_until": None,
    "disabled_by": None,
    "disabled_at": None,
    "last_error": None,
    "consecutive_failures": 0,
}


def _all_but(*states: str) -> frozenset[str]:
    return frozenset(STORED_STATUSES) - set(states)


@dataclass(frozen=True)
class Transition:
    """An event: the states it may leave, the state it makes, the fields the caller gives
    (`sets`) and the fields it clears; `by` says who triggers it."""

    sources: frozenset[str]
    target: str
    sets: tuple[str, ...] = ()
    clears: tuple[str, ...] = ()
    by: str = ""


_CLEAN_SLATE = (
    "cooldown_until",
    "consecutive_failures",
    "disabled_by",
    "disabled_at",
    "last_error",
)
_ADMIN_ON = frozenset((ACTIVE, COOLING_DOWN, AUTH_FAILED, DISABLED))

TRANSITIONS: dict[str, Transition] = {
    RATE_LIMITED: Transition(
        frozenset((ACTIVE, COOLING_DOWN)),
        COOLING_DOWN,
        ("cooldown_until", "last_error"),
        by="proxy: the upstream said 429 / overloaded",
    ),
    ANSWERED: Transition(
        frozenset((COOLING_DOWN,)), ACTIVE, clears=("cooldown_until",), by="proxy: an answer"
    ),
    REFUSED: Transition(
        _all_but(DISABLED, AUTH_FAILED),
        AUTH_FAILED,
        ("last_error", "disabled_by", "disabled_at"),
        by="proxy 401/403, key test 4xx, usage sync 401/403",
    ),
    FAILURE_STREAK: Transition(
        _all_but(DISABLED),
        DISABLED,
        ("disabled_by", "disabled_at"),
        by="proxy: consecutive failures reached the threshold",
    ),
    SECRET_LOST: Transition(
        _all_but(DISABLED, *SECRET_STATUSES),
        SECRET_UNREADABLE,
        ("last_error",),
        by="proxy or start-up check: the secret does not decrypt",
    ),
    SECRET_EXPOSED: Transition(
        _all_but(SECRET_INSECURE),
        SECRET_INSECURE,
        ("last_error",),
        by="start-up check: the empty passphrase decrypts the secret",
    ),
    SECRET_READABLE: Transition(
        frozenset((SECRET_UNREADABLE,)),
        ACTIVE,
        clears=("last_error",),
        by="start-up check: the secret decrypts again",
    ),
    COOLDOWN_OVER: Transition(
        frozenset((COOLING_DOWN,)), ACTIVE, clears=("cooldown_until",), by="scheduler"
    ),
    EXPIRE: Transition(_all_but(EXPIRED), EXPIRED, by="scheduler: expires_at passed"),
    # A test checks the credential (a model list answered with it), so it ends the states
    # a refused credential made. It never ends a cooldown: the upstream's 429 (a rate limit,
    # an exhausted quota) is about what a model list cannot check, and lasts as it said.
    TEST_PASSED: Transition(
        frozenset((AUTH_FAILED, SECRET_UNREADABLE)),
        ACTIVE,
        clears=("disabled_by", "disabled_at"),
        by="key test (Test, re-validation, model discovery)",
    ),
    REVALIDATED: Transition(
        frozenset((DISABLED,)),
        ACTIVE,
        clears=_CLEAN_SLATE,
        by="re-validation (scheduler, Restore invalid keys) of an automatically disabled key",
    ),
    # An admin's enable never brings back an expired key (a new expiry does) nor one whose
    # secret must be re-entered (re-entering it does).
    ENABLE: Transition(_ADMIN_ON, ACTIVE, clears=_CLEAN_SLATE, by="admin"),
    DISABLE: Transition(
        frozenset(STORED_STATUSES),
        DISABLED,
        ("disabled_by", "disabled_at"),
        ("cooldown_until", "consecutive_failures"),
        by="admin",
    ),
    # Also from `disabled` when the gateway (SYSTEM) disabled it: see `reset`.
    RESET: Transition(
        frozenset((COOLING_DOWN, AUTH_FAILED)), ACTIVE, clears=_CLEAN_SLATE, by="admin"
    ),
    NEW_EXPIRY: Transition(frozenset((EXPIRED,)), ACTIVE, by="admin gives a new (or no) expiry"),
    SECRET_REENTERED: Transition(
        frozenset(SECRET_STATUSES),
        ACTIVE,
        clears=("last_error", "consecutive_failures", "disabled_by", "disabled_at"),
        by="admin re-enters the secret",
    ),
}


def next_state(event: str, status: str) -> str | None:
    """The state `event` makes from `status`, or None when the event is refused there."""
    rule = TRANSITIONS[event]
    return rule.target if status in rule.sources else None


def allows(event: str, status: str) -> bool:
    """True when `event` may change a key in `status`."""
    return status in TRANSITIONS[event].sources


def changes(event: str, **given) -> dict:
    """The column values `event` writes: its state, its cleared fields, the given ones."""
    rule = TRANSITIONS[event]
    unknown = set(given) - set(rule.sets) - {"updated_at"}
    if unknown:
        raise ValueError(f"{event} does not set {sorted(unknown)}")
    values = {field: _CLEARED[field] for field in rule.clears}
    values.update(given, status=rule.target)
    return values


def update_for(event: str, *where, **given):
    """The guarded UPDATE of `event` (only rows in an allowed from-state), narrowed by
    `where` (e.g. the key's id) — for callers working in SQL Core."""
    rule = TRANSITIONS[event]
    guard = keys_t.c.status.in_(sorted(rule.sources))
    return update(keys_t).where(guard, *where).values(**changes(event, **given))


def apply(event: str, key, now: datetime | None = None, **given) -> bool:
    """Apply `event` to an ORM ProviderKey; False (nothing changed) when refused."""
    if not allows(event, key.status):
        return False
    for field, value in changes(event, **given).items():
        setattr(key, field, value)
    if now is not None:
        key.updated_at = now
    return True


def reset(key, now: datetime, actor: str | None) -> bool:
    """An admin's reset: a key the gateway took out (cooling down, auth failed, disabled by
    the system) is active again with a clean slate; others only lose cooldown and streak."""
    if key.status == DISABLED and key.disabled_by == SYSTEM:
        return apply(ENABLE, key, now)
    if apply(RESET, key, now):
        return True
    key.cooldown_until, key.consecutive_failures, key.updated_at = None, 0, now
    return False


def set_enabled(key, enabled: bool, now: datetime, actor: str | None) -> bool:
    """An admin's enable (a clean slate) or disable (who and when remembered)."""
    if enabled:
        return apply(ENABLE, key, now)
    return apply(DISABLE, key, now, disabled_by=actor, disabled_at=now)


def _answered_case():
    rule = TRANSITIONS[ANSWERED]
    left = keys_t.c.status.in_(sorted(rule.sources))
    values = {"status": case((left, rule.target), else_=keys_t.c.status)}
    for field in rule.clears:
        values[field] = case((left, _CLEARED[field]), else_=keys_t.c[field])
    return values


def _answered_sql() -> str:
    rule = TRANSITIONS[ANSWERED]
    left = ", ".join(f"'{s}'" for s in sorted(rule.sources))
    parts = [f"status = CASE WHEN status IN ({left}) THEN '{rule.target}' ELSE status END"]
    for field in rule.clears:
        parts.append(
            f"{field} = CASE WHEN status IN ({left}) THEN NULL ELSE {field} END"
            if _CLEARED[field] is None
            else f"{field} = CASE WHEN status IN ({left}) THEN 0 ELSE {field} END"
        )
    return ", ".join(parts)


# Built once at import: the success path (every answered request) pays nothing for the table.
ANSWERED_VALUES = _answered_case()  # for SQLAlchemy `.values(**ANSWERED_VALUES)`
ANSWERED_SQL = _answered_sql()  # the same as text, for the raw batched writer (ledger/books)
ANSWERED_FROM = TRANSITIONS[ANSWERED].sources  # for the per-process cache's copy of the row

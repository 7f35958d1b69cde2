"""Client keys (F31, F8): the keys apps call KeyRelay with, one profile each.

A key is `kr-` and 43 random URL-safe characters (256 bits). Only its SHA-256 is stored:
with that much entropy a fast hash is enough, and the proxy can find a key by one indexed
lookup. The proxy resolves a token to a `Caller` through a one-second cache, so revoking or
expiring a key takes effect at once in the process that did it and within a second elsewhere.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from gateway.admin import apischema
from gateway.admin.errors import InputError, Problems, limit_or_none
from gateway.errors import GatewayError, database_down
from gateway.keys import provider_keys as keyring
from gateway.keys.provider_keys import parse_models, parse_moment
from gateway.keys.secrets import token_hash as fingerprint  # plain SHA-256: see the docstring
from gateway.limits import budgets
from gateway.limits.local import Limits
from gateway.validation import MAX_SQL_INT
from models import ClientKey, ConversationPin, Member, Profile, StoredResponse

PREFIX = "kr-"
# Accepted by the API but not enforced yet (limits and budgets come next): refused
# with a clear 400 rather than stored and silently ignored.
LIMITS = ("rpm_limit", "tpm_limit", "max_parallel_requests")
BUDGET = ("max_budget", "budget_duration")
_LIMIT = apischema.nullable(apischema.integer(1, MAX_SQL_INT))
# The fields of a client key as the OpenAPI document writes them; parse() accepts these only.
SCHEMA = {
    "profile": keyring.key_input_schema(False)["properties"]["profile"],
    "name": apischema.text(128),
    "models": apischema.nullable(apischema.MODELS),
    "expires_at": apischema.nullable(apischema.MOMENT),
    **dict.fromkeys(LIMITS, _LIMIT),
    "max_budget": apischema.nullable(apischema.USD),
    "budget_duration": apischema.nullable({"type": "string", "enum": list(budgets.DURATIONS)}),
}
FIELDS = tuple(SCHEMA)


def input_schema(creating: bool) -> dict:
    """The body parse() accepts, as an OpenAPI schema."""
    return apischema.obj(SCHEMA, required=("name",) if creating else ())


CACHE_SECONDS = 1.0


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hint(key: str) -> str:
    return f"{key[:7]}…{key[-4:]}"


@dataclass
class ClientKeyInput:
    profile: str | None = None
    name: str | None = None
    models: list[str] | None = None
    has_models: bool = False
    expires_at: datetime | None = None
    has_expiry: bool = False
    # Only the limits given: a value, or None for "unlimited".
    limits: dict[str, int | None] = dataclasses.field(default_factory=dict)


def _expiry(value) -> datetime | None:
    return parse_moment("expires_at", value)


def parse(data: object, creating: bool) -> ClientKeyInput:
    """Check admin input for a client key; InputError names the bad field (and carries
    every bad field in its `errors`)."""
    if not isinstance(data, dict):
        raise InputError("body", "The request body must be a JSON object.")
    problems = Problems()
    for field in data:
        if field not in FIELDS:
            problems.add(InputError(field, f"Unknown field '{field}'; known: {', '.join(FIELDS)}."))
    spec = ClientKeyInput(has_models="models" in data, has_expiry="expires_at" in data)
    for field, limit in (("profile", 64), ("name", 128)):
        with problems.field():
            setattr(spec, field, _text(data, field, limit))
    with problems.field():
        spec.models = _models(data.get("models"))
    with problems.field():
        spec.expires_at = _expiry(data.get("expires_at"))
    for name in LIMITS:
        if name in data:
            with problems.field():
                spec.limits[name] = limit_or_none(name, data[name])
    with problems.field():
        _budget(data, spec)
    if creating and spec.name is None and "name" not in {e.field for e in problems.found}:
        problems.add(InputError("name", "Missing required field 'name'."))
    problems.check()
    return spec


def _text(data: dict, field: str, limit: int) -> str | None:
    value = data.get(field)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise InputError(field, f"'{field}' must be a non-empty string.")
    if value is not None and len(value) > limit:
        raise InputError(field, f"'{field}' is longer than {limit} characters.")
    return value.strip() if value else None


def _models(models) -> list[str] | None:
    if models in (None, "*", ["*"]):
        return None
    parsed = parse_models(models)
    return None if parsed == ["*"] else parsed


def _budget(data: dict, spec: ClientKeyInput) -> None:
    """max_budget and budget_duration, each checked (both reported when both are bad)."""
    problems = Problems()
    if "max_budget" in data:
        with problems.field():
            spec.limits["max_budget_micros"] = _checked(
                "max_budget", budgets.parse_usd, data["max_budget"]
            )
    if "budget_duration" in data:
        with problems.field():
            spec.limits["budget_duration"] = _checked(
                "budget_duration", lambda _name, value: budgets.parse_duration(value),
                data["budget_duration"],
            )  # fmt: skip
    problems.check()


def _checked(field: str, parse, value):
    """parse(field, value); its ValueError as an InputError naming the field."""
    try:
        return parse(field, value)
    except ValueError as exc:
        raise InputError(field, str(exc)) from None


def create(
    session: Session,
    data: ClientKeyInput,
    actor: str,
    now: datetime,
    defaults: dict[str, int | None] | None = None,
) -> tuple[ClientKey, str]:
    """A new client key; returns the row and the key itself (never stored, shown once).
    Limits not given take `defaults` (KEYRELAY_CLIENT_KEY_*)."""
    if data.expires_at is not None and data.expires_at <= now:
        raise InputError("expires_at", "'expires_at' is in the past.")
    profile_name = data.profile or "default"
    profile = session.scalar(select(Profile).where(Profile.name == profile_name))
    if profile is None:
        raise InputError("profile", f"Profile '{profile_name}' does not exist.", 404)
    key = new_key()
    row = ClientKey(
        profile=profile,
        name=data.name,
        key_hash=fingerprint(key),
        key_hint=hint(key),
        models=data.models,
        expires_at=data.expires_at,
        **{**(defaults or {}), **data.limits},
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row, key


def update(session: Session, row: ClientKey, data: ClientKeyInput, now: datetime) -> None:
    if data.profile is not None:
        profile = session.scalar(select(Profile).where(Profile.name == data.profile))
        if profile is None:
            raise InputError("profile", f"Profile '{data.profile}' does not exist.", 404)
        row.profile = profile
    if data.name is not None:
        row.name = data.name
    if data.has_models:
        row.models = data.models
    if data.has_expiry:
        row.expires_at = data.expires_at
    for name, value in data.limits.items():
        setattr(row, name, value)
    row.updated_at = now


def remove(session: Session, row: ClientKey) -> None:
    """Delete the key and the Responses conversations it stored or pinned (no one may
    read them again); its request-log rows keep its id, which is never handed out again."""
    session.execute(delete(StoredResponse).where(StoredResponse.client_key_id == row.id))
    session.execute(delete(ConversationPin).where(ConversationPin.client_key_id == row.id))
    session.delete(row)


def revoke(row: ClientKey, now: datetime) -> None:
    if row.revoked_at is None:
        row.revoked_at = now
        row.updated_at = now


# -- the proxy's side ------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """A client key's budget: micro-dollars per period, counted from `anchor`."""

    micros: int
    duration: str | None
    anchor: datetime


@dataclass(frozen=True)
class Caller:
    """Who is calling the proxy: the master key (any profile), or one client key."""

    client_key_id: int | None
    profile: str | None  # None: the master key, which picks with X-Profile
    models: frozenset[str] | None  # None: any model
    limits: Limits | None = None  # None: no rate limits
    budget: Budget | None = None  # None: no budget
    member_id: int | None = None  # the member who owns the key; None: an admin's key

    @property
    def scope(self) -> str:
        """The client key's rate-limit scope in the shared limiter."""
        return f"ck:{self.client_key_id}"


MASTER = Caller(None, None, None)


def _unauthorized(message: str, code: str) -> GatewayError:
    return GatewayError(401, message, type="authentication_error", code=code)


@dataclass(frozen=True)
class _Entry:
    id: int
    profile: str
    models: frozenset[str] | None
    expires_at: datetime | None
    revoked: bool
    limits: Limits | None
    budget: Budget | None
    member_id: int | None = None
    suspended: bool = False  # the owning member is suspended
    caller: Caller | None = None  # what resolve() answers: made once per cache entry


class Callers:
    """Token → Caller for the proxy: the master key, or a client key by its hash."""

    def __init__(self, engine: Engine, master_key: str, clock) -> None:
        self.engine = engine
        self.master = master_key.encode()
        self.clock = clock
        self._entries: dict[str, tuple[_Entry | None, float]] = {}

    def resolve(self, token: str | None) -> Caller:
        if not token:
            raise _unauthorized(
                "Missing API key. Send 'Authorization: Bearer <key>'.", "missing_api_key"
            )
        if hmac.compare_digest(token.encode(), self.master):
            return MASTER
        entry = self._lookup(fingerprint(token)) if token.startswith(PREFIX) else None
        if entry is None:
            raise _unauthorized(
                "Invalid API key. Use a KeyRelay client key or the master key.",
                "invalid_api_key",
            )
        if entry.revoked:
            raise _unauthorized("This API key was revoked.", "api_key_revoked")
        if entry.expires_at is not None and entry.expires_at <= self.clock.now():
            raise _unauthorized("This API key has expired.", "api_key_expired")
        if entry.suspended:
            raise GatewayError(
                403,
                "The account that owns this API key is suspended. Ask an admin to resume it.",
                type="permission_error",
                code="member_suspended",
            )
        return entry.caller

    def _lookup(self, digest: str) -> _Entry | None:
        hit = self._entries.get(digest)
        if hit is not None and time.monotonic() - hit[1] < CACHE_SECONDS:
            return hit[0]
        query = (
            select(
                ClientKey.id,
                Profile.name,
                ClientKey.models,
                ClientKey.expires_at,
                ClientKey.revoked_at,
                ClientKey.rpm_limit,
                ClientKey.tpm_limit,
                ClientKey.max_parallel_requests,
                ClientKey.max_budget_micros,
                ClientKey.budget_duration,
                ClientKey.created_at,
                ClientKey.member_id,
                Member.suspended_at,
            )
            .join(Profile, Profile.id == ClientKey.profile_id)
            .outerjoin(Member, Member.user_id == ClientKey.member_id)
            .where(ClientKey.key_hash == digest)
        )
        try:
            with self.engine.connect() as conn:
                row = conn.execute(query).first()
        except Exception as exc:
            if hit is None or not database_down(exc):
                raise
            # The database is down: the key as last read serves until it is back.
            self._entries[digest] = (hit[0], time.monotonic())
            return hit[0]
        entry = None
        if row is not None:
            models = frozenset(row.models) if row.models else None
            limits = Limits(row.rpm_limit, row.tpm_limit, row.max_parallel_requests)
            limits = limits if limits.any() else None
            budget = (
                None
                if row.max_budget_micros is None
                else Budget(row.max_budget_micros, row.budget_duration, row.created_at)
            )
            entry = _Entry(
                row.id,
                row.name,
                models,
                row.expires_at,
                row.revoked_at is not None,
                limits,
                budget,
                row.member_id,
                row.suspended_at is not None,
                # One Caller per entry, not one per request (it is immutable).
                Caller(row.id, row.name, models, limits, budget, row.member_id),
            )
        if len(self._entries) > 10_000:  # unknown tokens must not grow the cache forever
            self._entries.clear()
        self._entries[digest] = (entry, time.monotonic())
        return entry

    def forget(self) -> None:
        self._entries.clear()

"""Candidates: a profile's usable keys for a model, best first (F21), or why there are
none; and the keys' secrets, decrypted for an attempt."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from gateway import periods, store
from gateway.errors import GatewayError, database_down
from gateway.keys import catalog, selection
from gateway.keys.cache import KeyCache
from gateway.keys.secrets import SecretBox, SecretUnreadable
from gateway.providers import DEFAULT_MODEL_KINDS, wording
from gateway.providers.transport import Target
from gateway.proxy.admission import busy_scope
from gateway.store import KeyRow
from models.provider_keys import SECRET_UNREADABLE, STATUS_SENTENCES

PROFILE_CACHE_SECONDS = 5.0
log = logging.getLogger(__name__)


@dataclass
class Profiles:
    """Profile name → its row (id, strategy, wait, paid gating), cached briefly: every
    request needs it."""

    engine: Engine
    entries: dict[str, tuple[store.ProfileRow, float]] = field(default_factory=dict)

    def resolve(self, name: str) -> store.ProfileRow:
        hit = self.entries.get(name)
        if hit and time.monotonic() - hit[1] < PROFILE_CACHE_SECONDS:
            return hit[0]
        try:
            with self.engine.connect() as conn:
                found = store.find_profile(conn, name)
        except Exception as exc:
            if hit is None or not database_down(exc):
                raise
            found = hit[0]  # the database is down: the profile as last read
        if found is None:
            raise GatewayError(
                404,
                f"Profile '{name}' does not exist. Send an existing profile in X-Profile, "
                "or add a provider key to that profile first.",
                code="profile_not_found",
            )
        self.entries[name] = (found, time.monotonic())
        return found

    def forget(self) -> None:
        """Drop the cache (a profile changed in this process)."""
        self.entries.clear()

    def name_of(self, profile_id: int) -> str:
        """The name of a profile this process resolved lately (its id as text if none)."""
        for name, (row, _) in list(self.entries.items()):
            if row.id == profile_id:
                return name
        return str(profile_id)


class Candidates:
    """Usable keys of a profile for a model, in the profile's strategy's order."""

    def __init__(
        self, engine: Engine, keys: KeyCache, secrets: SecretBox, clock, strategy: str
    ) -> None:
        self.engine, self.keys, self.secrets, self.clock = engine, keys, secrets, clock
        self.strategy = strategy
        self.limiter = None  # the shared counters, for least-busy (set by the Gateway)
        self.prices = None  # pricing.Prices: a cost-limited key needs a priced model
        self._picked_at: dict[int, datetime] = {}
        self._plain: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, profile: store.ProfileRow, model: str) -> list[KeyRow]:
        """Usable keys serving the model, best first; a 404/503 saying why if none."""
        now = self.clock.now()
        day = periods.local_day(now)
        pool = self.keys.keys(profile.id, day)
        keys = [k for k in pool if k.serves(model)]
        if not keys:
            raise _not_served(name, model, pool)
        usable = [k for k in keys if selection.effective_status(k, now) == "active"]
        if not usable:
            raise self._no_keys(name, keys, now)
        usable = self._within_cost_limits(usable, model)
        strategy = profile.strategy or self.strategy
        busy = None
        if strategy == selection.LEAST_BUSY and self.limiter is not None:
            now_s = int(now.timestamp())
            busy = {k.id: self.limiter.window(busy_scope(k.id), now_s).in_flight for k in usable}
        ordered = selection.order(usable, strategy, self._picked_at, busy=busy)
        with self._lock:
            self._picked_at[ordered[0].id] = now
        return ordered

    def _within_cost_limits(self, usable: list[KeyRow], model: str) -> list[KeyRow]:
        """The keys that may serve the model: a key with a cost limit only a priced one,
        since an unpriced model would cost it nothing and never reach the limit."""
        limited = [k for k in usable if _cost_limited(k)]
        if not limited or self.prices is None or self.prices.known(model):
            return usable
        free = [k for k in usable if not _cost_limited(k)]
        if free:
            return free
        raise GatewayError(
            400,
            f"The model '{model}' has no known price, and the provider keys that serve it "
            "have cost limits: its requests cannot be counted against them. An admin can "
            "set a price for the model (per million tokens or per request) on the "
            f"dashboard's Prices page or with PUT /api/admin/prices/{model}.",
            type="invalid_request_error",
            code="model_price_unknown",
            param="model",
        )

    def _no_keys(self, profile: str, keys: list[KeyRow], now: datetime) -> GatewayError:
        summary = selection.unavailable_summary(keys, now)
        headers = {}
        back = [at for k in keys if (at := selection.back_at(k, now)) is not None]
        if back:
            headers["Retry-After"] = str(max(1, int((min(back) - now).total_seconds() + 0.999)))
        return GatewayError(
            503,
            f"{_no_keys_head(profile, keys, now)}: {summary}.",
            type="upstream_error",
            code="no_available_keys",
            headers=headers,
        )

    def target(self, key: KeyRow, client_headers: dict | None = None) -> Target:
        """The key with its secret decrypted (memoised per ciphertext), and the client's
        headers its upstream may honour. A secret this instance cannot decrypt marks the
        key `secret_unreadable` and raises SecretUnreadable (the attempt loop passes over
        such a key)."""
        secret = self._plain.get(key.secret_encrypted)
        if secret is None:
            try:
                secret = self.secrets.decrypt(key.secret_encrypted)
            except SecretUnreadable:
                self._secret_unreadable(key)
                raise
            self._plain[key.secret_encrypted] = secret
        base = key.base_url.rstrip("/")
        return Target(
            key.id,
            key.provider,
            base,
            secret,
            bool(key.responses_api),
            key.options or {},
            client_headers or {},
        )

    def _secret_unreadable(self, key: KeyRow) -> None:
        if not key.id:  # the environment fallback key has no row
            return
        with self.engine.begin() as conn:
            marked = store.mark_secret_unreadable(
                conn, key.id, key.secret_encrypted, self.clock.now()
            )
        self.keys.forget()
        if marked:
            log.warning(
                "provider key #%s (%s): %s", key.id, key.name, STATUS_SENTENCES[SECRET_UNREADABLE]
            )


def _not_served(profile: str, model: str, pool: list[KeyRow]) -> GatewayError:
    """404: no key of the profile serves the model (its catalog: gateway/keys/catalog.py)."""
    kind = DEFAULT_MODEL_KINDS.get(model)
    head = f"{wording([kind], 'no_keys')}: t" if kind else "T"
    untested = sum(1 for k in pool if catalog.source(k) == catalog.UNKNOWN)
    hint = (
        f" {untested} of its keys serve no model yet: test them (their model list is "
        "discovered) or declare their models."
        if untested
        else ""
    )
    return GatewayError(
        404,
        f"{head}he model '{model}' is not served by any provider key in profile "
        f"'{profile}'.{hint} Add a key that serves it, or list models with GET /v1/models.",
        code="model_not_found",
        param="model",
    )


def _cost_limited(key: KeyRow) -> bool:
    return (
        key.daily_cost_limit_micros is not None
        or key.monthly_cost_limit_micros is not None
        or key.total_cost_limit_micros is not None
    )


def _no_keys_head(profile: str, keys: list[KeyRow], now: datetime) -> str:
    """The start of a no-keys error: the provider's own words when every key is of one
    kind that has them (RovoDev: daily limit exceeded, or no available keys)."""
    kinds = [k.provider for k in keys]
    hits = [selection.limit_hit(k) for k in keys]
    at_daily = all(
        selection.effective_status(k, now) == "limit_reached" and hit[0] == "daily token limit"
        for k, hit in zip(keys, hits, strict=True)
    )
    own = wording(kinds, "limit_reached") if at_daily else None
    own = own or wording(kinds, "no_keys")
    return f"{own} ({profile})" if own else f"No available keys for profile {profile}"

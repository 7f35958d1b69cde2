"""The attempt loop: try usable keys in order, apply each outcome to the key, stop or go on."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Engine

from gateway import metrics, store
from gateway.accounting import AttemptRecord, RequestRecord
from gateway.clock import Clock
from gateway.errors import GatewayError, database_down
from gateway.policy import Decision, KeyAction, Outcome, decide
from gateway.providers import wording
from gateway.providers.base import Timeouts, TransportError, UpstreamReply, retry_after_seconds
from gateway.secrets import SecretUnreadable
from gateway.selection import unavailable_summary
from gateway.store import KeyRow
from models.provider_keys import SECRET_UNREADABLE

log = logging.getLogger(__name__)

_OUTCOME_TEXT = {
    Outcome.RATE_LIMITED: "rate limited",
    Outcome.AUTH_FAILED: "rejected the key",
    Outcome.SERVER_ERROR: "server error",
    Outcome.TIMEOUT: "timed out",
    Outcome.CONNECTION_ERROR: "connection failed",
    Outcome.BAD_RESPONSE: "unreadable answer",
    Outcome.MODEL_NOT_FOUND: "does not have the model",
}


@dataclass(frozen=True)
class RetrySettings:
    """Bounds of the attempt loop and what failures do to keys."""

    max_attempts: int
    deadline: float
    connect_timeout: float
    read_timeout: float
    cooldown_seconds: float
    failure_threshold: int


class KeyHealth:
    """Applies an attempt's outcome to its provider key, right away, for every worker to see."""

    def __init__(
        self, engine: Engine, clock: Clock, settings: RetrySettings, on_change, breaker=None
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.settings = settings
        self.on_change = on_change
        self.breaker = breaker  # the circuit per upstream (breaker.py), or None

    def apply(
        self,
        key: KeyRow,
        decision: Decision,
        reply: UpstreamReply | None,
        error: str,
        model: str | None = None,
    ):
        """Cool down, fail or count a failure, or note that the key does not serve the
        model; success is written with the log row."""
        now = self.clock.now()
        try:
            self._write(key, decision, reply, error, now, model)
        except Exception as exc:
            if not database_down(exc):
                raise
            # The database is down: the request goes on to the next key; the circuit
            # breaker (in memory) still counts the failure.
            log.warning("key #%s's failure not recorded, the database is unusable: %s", key.id, exc)
            return
        self.on_change()

    def _write(self, key: KeyRow, decision: Decision, reply, error: str, now, model) -> None:
        if decision.key_action is KeyAction.NOT_SERVED and (not key.id or model is None):
            return  # the environment fallback key has no row to note it in
        with self.engine.begin() as conn:
            if decision.key_action is KeyAction.NOT_SERVED:
                store.mark_unserved(conn, key.id, model, now)
            if decision.key_action is KeyAction.COOL_DOWN:
                wait = retry_after_seconds(reply.headers if reply else {}, now)
                wait = self.settings.cooldown_seconds if wait is None else wait
                store.cool_down(conn, key.id, now + timedelta(seconds=wait), error)
            elif decision.key_action is KeyAction.AUTH_FAILED:
                store.mark_auth_failed(conn, key.id, error, now)
            elif decision.key_action is KeyAction.COUNT_FAILURE:
                store.count_failure(conn, key.id, self.settings.failure_threshold, error, now)


def _error_text(reply: UpstreamReply | None, transport: TransportError | None) -> str:
    if transport is not None:
        return str(transport)
    return f"HTTP {reply.status}: {reply.body[:300].decode('utf-8', 'replace')}"


def run_attempts(
    keys: list[KeyRow],
    call: Callable[[KeyRow, Timeouts], UpstreamReply],
    rec: RequestRecord,
    settings: RetrySettings,
    health: KeyHealth,
    admit: Callable[[KeyRow], int | None] | None = None,
) -> tuple[KeyRow, UpstreamReply]:
    """Call keys in order until one answers or the request's own fault comes back.

    `admit(key)` takes a place in the key's RPM/TPM windows, or answers the seconds until
    it has room: such a key is passed over without an attempt and without penalty (F32).
    A key whose secret cannot be decrypted (`call` raises SecretUnreadable; the key is
    marked by then) is passed over the same way, without an attempt.
    Raises GatewayError when every attempt failed, naming each key's failure.
    """
    started = time.monotonic()
    failures: list[tuple[KeyRow, Outcome, float | None]] = []
    at_limit: list[int] = []
    unreadable: list[KeyRow] = []
    circuit_open: list[KeyRow] = []
    breaker = health.breaker
    for key in keys:
        if len(failures) >= settings.max_attempts:
            break
        remaining = settings.deadline - (time.monotonic() - started)
        if remaining <= 0:
            break
        if admit is not None and (wait := admit(key)) is not None:
            at_limit.append(wait)
            continue
        if breaker is not None and not breaker.allow(key.base_url):
            circuit_open.append(key)  # its upstream is failing: not even tried
            continue
        timeouts = Timeouts(settings.connect_timeout, min(settings.read_timeout, remaining))
        attempt_start = time.perf_counter()
        reply, transport = None, None
        try:
            reply = call(key, timeouts)
            decision = decide(
                reply.status, overflow=reply.overflow is not None, missing=reply.model_missing
            )
        except TransportError as exc:
            transport = exc
            decision = decide(None, exc.outcome)
        except SecretUnreadable:
            if breaker is not None:
                breaker.release(key.base_url)
            unreadable.append(key)
            continue
        except GatewayError:  # the request's own fault (a 400 before any call): not the key's
            if breaker is not None:
                breaker.release(key.base_url)
            raise
        if breaker is not None:
            breaker.record(key.base_url, decision.outcome)
        latency_ms = int((time.perf_counter() - attempt_start) * 1000)
        error = None if decision.outcome is Outcome.OK else _error_text(reply, transport)
        rec.attempts.append(
            AttemptRecord(
                len(rec.attempts) + 1,
                key.id,
                decision.outcome,
                reply.status if reply else None,
                latency_ms,
                error,
            )
        )
        metrics.sink.attempt(key.provider, key.id, decision.outcome.value)
        if not decision.fail_over:
            return key, reply
        health.apply(key, decision, reply, error, rec.model)
        retry_after = retry_after_seconds(reply.headers, health.clock.now()) if reply else None
        failures.append((key, decision.outcome, retry_after))
    if not failures and at_limit:
        raise _keys_at_limit(rec, len(at_limit), min(at_limit))
    if not failures and unreadable:
        raise _keys_unreadable(rec, unreadable, health.clock.now())
    if not failures and circuit_open:
        raise _circuits_open(rec, circuit_open, breaker)
    if failures:  # the provider that failed last answers for the request (its headers, log)
        rec.provider = failures[-1][0].provider
    raise _all_failed(failures, rec, settings, time.monotonic() - started)


def _keys_unreadable(rec: RequestRecord, keys: list[KeyRow], now) -> GatewayError:
    """Every key tried had a secret this instance cannot decrypt: the usual no-keys 503."""
    marked = [replace(key, status=SECRET_UNREADABLE) for key in keys]  # as stored by now
    return GatewayError(
        503,
        f"No available keys for model {rec.model}: {unavailable_summary(marked, now)}.",
        type="upstream_error",
        code="no_available_keys",
    )


def _circuits_open(rec: RequestRecord, keys: list[KeyRow], breaker) -> GatewayError:
    """Every key's upstream is failing: 503 naming them and when they are tried again."""
    from gateway.proxy.breaker import upstream_of

    states = {upstream_of(k.base_url): breaker.state(k.base_url) for k in keys}
    until = min((s["until"] for s in states.values() if s), default=None)
    names = ", ".join(sorted(states))
    headers = {}
    if until is not None:
        wait = (datetime.fromisoformat(until) - breaker.clock.now()).total_seconds()
        headers["Retry-After"] = str(max(1, int(wait + 0.999)))
    return GatewayError(
        503,
        f"No available keys for model {rec.model}: their upstream ({names}) is failing; "
        f"the circuit is open{f' until {until}' if until else ''}, then one request tries it.",
        type="upstream_error",
        code="no_available_keys",
        headers=headers,
    )


def _keys_at_limit(rec: RequestRecord, count: int, wait: int) -> GatewayError:
    noun = "key is" if count == 1 else "keys are"
    return GatewayError(
        429,
        f"Every provider key for model {rec.model} is at its requests- or tokens-per-minute "
        f"or concurrency limit ({count} {noun} full). Retry after {wait}s, or add provider keys.",
        type="rate_limit_error",
        code="provider_keys_at_limit",
        headers={"Retry-After": str(wait)},
    )


def _all_failed(failures, rec: RequestRecord, settings: RetrySettings, elapsed: float):
    """The client-facing error after the last attempt: 429, 504 or 502."""
    if not failures:
        return GatewayError(
            504,
            f"Request deadline of {settings.deadline:g}s passed before an upstream answered.",
            type="upstream_error",
            code="deadline_exceeded",
        )
    detail = "; ".join(f"key #{key.id} {_OUTCOME_TEXT[outcome]}" for key, outcome, _ in failures)
    summary = f"All {len(failures)} attempts for model {rec.model} failed ({detail})."
    outcomes = {outcome for _, outcome, _ in failures}
    if outcomes == {Outcome.MODEL_NOT_FOUND}:  # the keys' catalogs were wrong about it
        return GatewayError(
            404,
            f"The model '{rec.model}' is not served by any provider key: the upstreams "
            f"answered that they do not have it ({detail}). List models with GET /v1/models.",
            code="model_not_found",
            param="model",
        )
    if outcomes == {Outcome.RATE_LIMITED}:
        waits = [wait if wait is not None else settings.cooldown_seconds for *_, wait in failures]
        wait = max(1, int(min(waits) + 0.999))
        return GatewayError(
            429,
            f"{summary} Retry after {wait}s or add provider keys.",
            type="rate_limit_error",
            code="upstream_rate_limited",
            headers={"Retry-After": str(wait)},
        )
    status = 504 if failures[-1][1] is Outcome.TIMEOUT else 502
    if outcomes == {Outcome.AUTH_FAILED}:  # in the provider's own words, where it has them
        own = wording((key.provider for key, *_ in failures), "auth_failed")
        summary = f"{own}: {summary}" if own else summary
    return GatewayError(
        status,
        f"{summary} Check the keys' health in /api/admin/keys; retry later.",
        type="upstream_error",
        code="upstream_failed",
    )

"""Attempts: one model's keys tried in turn. `Attempts` keeps what each key did (an
attempt record, or why it was passed over) and decides from each outcome whether the
request is done or goes on to the next key; when none answered, the error that names every
key's failure. `KeyHealth` applies an outcome to its key (cooldown, failure count, circuit)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Engine

from gateway import metrics, store
from gateway.clock import Clock
from gateway.errors import GatewayError, database_down
from gateway.keys.cache import KeyCache
from gateway.keys.selection import unavailable_summary
from gateway.ledger.accounting import AttemptRecord, RequestRecord
from gateway.policy import Decision, KeyAction, Outcome, decide
from gateway.providers import wording
from gateway.providers.base import Timeouts, TransportError, UpstreamReply, retry_after_seconds
from gateway.providers.carry import Unsupported
from gateway.proxy.breaker import upstream_of
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
        self, engine: Engine, clock: Clock, settings: RetrySettings, keys: KeyCache, breaker=None
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.settings = settings
        self.keys = keys  # the key cache, dropped after a key's state changed
        self.breaker = breaker  # the circuit per upstream (breaker.py), or None

    def record(
        self, key: KeyRow, decision: Decision, reply: UpstreamReply | None, error, model: str
    ):
        """Count the outcome in the key's circuit; a failure also in the key (`apply`)."""
        if self.breaker is not None:
            change = self.breaker.record(key.base_url, decision.outcome)
            if change is not None:  # once per opening or closing, whichever worker saw it
                self._audit_circuit(key, change)
        if decision.fail_over:
            self.apply(key, decision, reply, error, model)

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
        self.keys.forget()

    def _audit_circuit(self, key: KeyRow, change: str) -> None:
        """An audit entry for a circuit opened or closed (the upstream's, named by host)."""
        now = self.clock.now()
        try:
            with self.engine.begin() as conn:
                state = self.breaker.state(key.base_url)
                store.audit_circuit(conn, key, upstream_of(key.base_url), change, now, state)
        except Exception as exc:
            if not database_down(exc):
                raise
            log.warning("circuit %s of key #%s's upstream not audited: %s", change, key.id, exc)

    def _write(self, key: KeyRow, decision: Decision, reply, error: str, now, model) -> None:
        if decision.key_action is KeyAction.NOT_SERVED and (not key.id or model is None):
            return  # the environment fallback key has no row to note it in
        with self.engine.begin() as conn:
            if decision.key_action is KeyAction.NOT_SERVED:
                store.mark_unserved(conn, key.id, model, now)
            if decision.key_action is KeyAction.COOL_DOWN:
                wait = retry_after_seconds(reply.headers if reply else {}, now)
                wait = self.settings.cooldown_seconds if wait is None else wait
                store.cool_down(conn, key.id, now + timedelta(seconds=wait), error, now)
            elif decision.key_action is KeyAction.AUTH_FAILED:
                store.mark_auth_failed(conn, key.id, error, now)
            elif decision.key_action is KeyAction.COUNT_FAILURE:
                store.count_failure(conn, key.id, self.settings.failure_threshold, error, now)


def _error_text(reply: UpstreamReply | None, transport: TransportError | None) -> str:
    if transport is not None:
        return str(transport)
    return f"HTTP {reply.status}: {reply.body[:300].decode('utf-8', 'replace')}"


class Attempts:
    """One model's attempts, key after key: the time and attempts left, each outcome's
    verdict (done, or on to the next key), and the error when no key answered.

    A key at its RPM/TPM or concurrency limit, whose upstream's circuit is open, or whose
    secret cannot be decrypted is passed over without an attempt and without penalty (F32).
    """

    __slots__ = (
        "settings", "rec", "clock", "started", "failures", "at_limit", "unreadable", "open",
        "refusal",
    )  # fmt: skip

    def __init__(self, settings: RetrySettings, rec: RequestRecord, clock: Clock) -> None:
        self.settings, self.rec, self.clock = settings, rec, clock
        self.started = time.monotonic()
        self.failures: list[tuple[KeyRow, Outcome, float | None]] = []
        self.at_limit: list[int] = []
        self.unreadable: list[KeyRow] = []
        self.open: list[KeyRow] = []
        self.refusal: Unsupported | None = None  # a field the first refusing kind cannot carry

    def timeouts(self) -> Timeouts | None:
        """The next attempt's timeouts (its read bounded by the request's deadline), or
        None when no attempt is left: as many failed as allowed, or the deadline passed."""
        settings = self.settings
        if len(self.failures) >= settings.max_attempts:
            return None
        remaining = settings.deadline - (time.monotonic() - self.started)
        if remaining <= 0:
            return None
        return Timeouts(settings.connect_timeout, min(settings.read_timeout, remaining))

    def full(self, wait: int) -> None:
        """A key passed over at its limit: it has room again in `wait` seconds."""
        self.at_limit.append(wait)

    def circuit_open(self, key: KeyRow) -> None:
        """A key passed over: its upstream is failing (the circuit is open)."""
        self.open.append(key)

    def secret_unreadable(self, key: KeyRow) -> None:
        """A key passed over: its secret cannot be decrypted (the key is marked by then)."""
        self.unreadable.append(key)

    def cannot_carry(self, refusal: Unsupported) -> None:
        """A key passed over without blame: its provider cannot carry a field the request
        asks for (a key of another kind may)."""
        self.refusal = self.refusal or refusal

    def judge(
        self, key: KeyRow, answer: UpstreamReply | TransportError, started: float
    ) -> tuple[Decision, UpstreamReply | None, str | None]:
        """The verdict on one attempt, from its reply or transport failure: the decision
        (done unless `fail_over`), the reply if one came, and the error text if it failed.
        The attempt is written on the request's record; a failure is remembered."""
        if isinstance(answer, TransportError):
            reply, transport = None, answer
            decision = decide(None, answer.outcome)
        else:
            reply, transport = answer, None
            decision = decide(
                answer.status, overflow=answer.overflow is not None, missing=answer.model_missing
            )
        latency_ms = int((time.perf_counter() - started) * 1000)
        error = None if decision.outcome is Outcome.OK else _error_text(reply, transport)
        rec = self.rec
        status = reply.status if reply else None
        number = len(rec.attempts) + 1
        rec.attempts.append(
            AttemptRecord(number, key.id, decision.outcome, status, latency_ms, error)
        )
        metrics.sink.attempt(key.provider, key.id, decision.outcome.value)
        if decision.fail_over:
            now = self.clock.now()
            retry_after = retry_after_seconds(reply.headers, now) if reply else None
            self.failures.append((key, decision.outcome, retry_after))
        return decision, reply, error

    def failed(self, breaker) -> GatewayError:
        """The error when no key answered: every key at its limit (429), unreadable or
        its circuit open (503), or every attempt failed (429, 502, 504), naming each."""
        rec, failures = self.rec, self.failures
        if not failures and self.refusal is not None:
            return self.refusal
        if not failures and self.at_limit:
            return _keys_at_limit(rec, len(self.at_limit), min(self.at_limit))
        if not failures and self.unreadable:
            return _keys_unreadable(rec, self.unreadable, self.clock.now())
        if not failures and self.open:
            return _circuits_open(rec, self.open, breaker)
        if failures:  # the provider that failed last answers for the request (its headers, log)
            rec.provider = failures[-1][0].provider
        return _all_failed(failures, rec, self.settings, time.monotonic() - self.started)


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

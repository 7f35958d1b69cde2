"""The Gateway: what the proxy blueprint calls. Profile → keys → attempts → accounting."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
from sqlalchemy import Engine

from gateway import accounting, budgets, periods, selection, store, tokens
from gateway.accounting import RequestRecord, Usage
from gateway.books import Books
from gateway.clientkeys import MASTER, Caller, Callers
from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.journal import DatabaseIdentity
from gateway.keycache import KeyCache, apply_booking, needs_touch
from gateway.limiter import Limits, SharedLimiter, Window
from gateway.policy import Outcome
from gateway.pricing import Prices
from gateway.providers import ADAPTERS
from gateway.providers.base import Target, Timeouts, TransportError, UpstreamReply
from gateway.providers.http import UpstreamClient
from gateway.router import KeyHealth, RetrySettings, run_attempts
from gateway.routes import Routes
from gateway.secrets import SecretBox, SecretUnreadable
from gateway.store import KeyRow
from gateway.streaming import SSEFilter, error_event, strip_cost
from gateway.validation import validate_chat
from models.provider_keys import SECRET_INSECURE, SECRET_UNREADABLE, STATUS_SENTENCES
from models.types import usd

PROFILE_CACHE_SECONDS = 5.0
TEST_TIMEOUTS = Timeouts(connect=5.0, read=15.0)
log = logging.getLogger(__name__)


@dataclass
class ProxyResponse:
    """What goes back to the client: status, headers, and a body or a chunk iterator."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: Iterator[bytes] | None = None


@dataclass
class GatewaySettings:
    """Everything the gateway reads from configuration."""

    retry: RetrySettings
    strategy: str = selection.MOST_REMAINING
    pool_size: int = 256
    use_paid_models: bool = True
    # (provider, secret, base_url) of the environment fallback key (F26), or None.
    fallback_key: tuple[str, str, str] | None = None


@dataclass
class _Profiles:
    """Profile name → its row (id, strategy, wait, paid gating), cached briefly: every
    request needs it."""

    engine: Engine
    entries: dict[str, tuple[store.ProfileRow, float]] = field(default_factory=dict)

    def resolve(self, name: str) -> store.ProfileRow:
        hit = self.entries.get(name)
        if hit and time.monotonic() - hit[1] < PROFILE_CACHE_SECONDS:
            return hit[0]
        with self.engine.connect() as conn:
            found = store.find_profile(conn, name)
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


class Gateway:
    """Serves chat completions and model lists from a profile's pool of provider keys."""

    def __init__(
        self,
        engine: Engine,
        secrets: SecretBox,
        settings: GatewaySettings,
        journal_dir: Path,
        clock=None,
        master_key: str = "",
        database: DatabaseIdentity | None = None,
    ):
        self.engine = engine
        self.secrets = secrets
        self.settings = settings
        self.clock = clock or Clock()
        self._http = UpstreamClient(maxsize=settings.pool_size)
        self.adapters = {name: cls(self._http) for name, cls in ADAPTERS.items()}
        self.profiles = _Profiles(engine)
        self.books = Books(engine, journal_dir, database)
        self.keys = KeyCache(engine, self.books.unapplied_tokens)
        self.health = KeyHealth(engine, self.clock, settings.retry, on_change=self.keys.forget)
        self.callers = Callers(engine, master_key, self.clock)
        self.limiter = SharedLimiter(
            Path(journal_dir).parent / "limits.bin", database.id if database else ""
        )
        self.prices = Prices(engine)
        self.routes = Routes(engine)
        self._fallback = None
        if settings.fallback_key is not None:
            provider, secret, base_url = settings.fallback_key
            self._fallback = KeyRow(  # the environment key, never written back (id 0)
                FALLBACK_KEY_ID,
                provider,
                "environment fallback key",
                base_url,
                secrets.encrypt(secret),
                ["*"],
                None,
                None,
                "active",
                None,
                0,
                None,
                0,
            )
        self.alerts = None  # budget alerts (alerts.py), attached by create_app when set up
        self._picked_at: dict[int, datetime] = {}
        self._plain: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def forget_limits(self, owner: str) -> None:
        """Free the shared windows and budget entries of a revoked or deleted key
        (`ck:7`, `pk:3`), so a key given the same id later starts clean."""
        self.limiter.forget(owner)

    def close(self) -> None:
        """Write what is queued to the database; close pooled upstream connections."""
        self.books.close()
        self._http.clear()

    # -- keys -------------------------------------------------------------------------

    def target(self, key: KeyRow) -> Target:
        """The key with its secret decrypted (memoised per ciphertext). A secret this
        instance cannot decrypt marks the key `secret_unreadable` and raises
        SecretUnreadable (the attempt loop passes over such a key)."""
        secret = self._plain.get(key.secret_encrypted)
        if secret is None:
            try:
                secret = self.secrets.decrypt(key.secret_encrypted)
            except SecretUnreadable:
                self._secret_unreadable(key)
                raise
            self._plain[key.secret_encrypted] = secret
        return Target(key.id, key.provider, key.base_url.rstrip("/"), secret)

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

    def candidates(self, profile: str, profile_id: int, strategy: str | None, model: str):
        """Usable keys serving the model, best first; a 404/503 saying why if none."""
        now = self.clock.now()
        keys = [k for k in self.keys.keys(profile_id, periods.local_day(now)) if k.serves(model)]
        if not keys:
            raise GatewayError(
                404,
                f"The model '{model}' is not served by any provider key in profile '{profile}'. "
                "Add a key that serves it, or list models with GET /v1/models.",
                code="model_not_found",
                param="model",
            )
        usable = [k for k in keys if selection.effective_status(k, now) == "active"]
        if not usable:
            raise self._no_keys(profile, keys, now)
        ordered = selection.order(usable, strategy or self.settings.strategy, self._picked_at)
        with self._lock:
            self._picked_at[ordered[0].id] = now
        return ordered

    def _no_keys(self, profile: str, keys: list[KeyRow], now: datetime) -> GatewayError:
        summary = selection.unavailable_summary(keys, now)
        headers = {}
        back = [at for k in keys if (at := selection.back_at(k, now)) is not None]
        if back:
            headers["Retry-After"] = str(max(1, int((min(back) - now).total_seconds() + 0.999)))
        return GatewayError(
            503,
            f"No available keys for profile {profile}: {summary}.",
            type="upstream_error",
            code="no_available_keys",
            headers=headers,
        )

    # -- chat -------------------------------------------------------------------------

    def chat(self, profile: str, body: object, caller: Caller = MASTER) -> ProxyResponse:
        """Serve one chat completion (streaming or not); errors raise GatewayError."""
        model = body.get("model") if isinstance(body, dict) else None
        streamed = isinstance(body, dict) and body.get("stream") is True
        rec = RequestRecord(
            self.clock.now(),
            "chat.completions",
            model if isinstance(model, str) else None,
            streamed,
            client_key_id=caller.client_key_id,
        )
        started = time.perf_counter()
        try:
            found = self.profiles.resolve(profile)
            rec.profile_id = found.id
            validate_chat(body)
            if caller.models is not None and model not in caller.models:
                raise _model_not_allowed(model, caller)
            # The budget first: a request it refuses takes no place in the key's window.
            if caller.budget is not None:
                self._reserve(caller, rec, body)
            if caller.limits is not None:
                self._admit(caller, rec)
            paid = found.use_paid_models
            chain = self.routes.table().chain(
                model, self.settings.use_paid_models if paid is None else paid
            )
            waited = 0.0
            while True:
                try:
                    return self._serve_chain(profile, found, chain, rec, body, started)
                except GatewayError as err:
                    pause = _wait_for_key(err, found.wait_for_key_seconds, waited)
                    if pause is None:
                        raise
                waited += pause
                self.clock.sleep(pause)
        except GatewayError as err:
            rec.status_code, rec.error = err.status, err.message
            rec.latency_ms = int((time.perf_counter() - started) * 1000)
            self.book(rec)
            err.headers.update(_trace_headers(rec))
            raise
        except BaseException:
            self._release(rec)  # a bug must not keep the client key's place for ever
            raise

    def refuse(self, endpoint: str, profile: str | None, caller: Caller, err: GatewayError):
        """Book a request refused before its body could be read (malformed JSON, too
        large, a profile it may not use): every authenticated call to a proxy endpoint
        that spends tokens gets its one log row. The error gets the trace headers."""
        rec = RequestRecord(
            self.clock.now(), endpoint, None, False, client_key_id=caller.client_key_id
        )
        if profile is not None:
            with contextlib.suppress(GatewayError):  # else logged without a profile
                rec.profile_id = self.profiles.resolve(profile).id
        rec.status_code, rec.error = err.status, err.message
        self.book(rec)
        err.headers.update(_trace_headers(rec))

    def _serve_chain(self, profile, found, chain, rec, body, started) -> ProxyResponse:
        """Try each model of the route's chain in turn (F20); the environment key (F26)
        when the pool had no usable key for any of them."""
        streamed = body.get("stream") is True
        last: GatewayError | None = None
        for model in chain:
            sent = body if model == body["model"] else {**body, "model": model}
            rec.model = model
            try:
                keys = self.candidates(profile, found.id, found.strategy, model)
                if streamed:
                    return self._stream(rec, sent, keys, started)
                return self._complete(rec, sent, keys, started)
            except GatewayError as err:
                if err.code not in _NEXT_IN_CHAIN:
                    raise
                last = err
        if self.settings.fallback_key is not None and last.code in _POOL_EMPTY:
            rec.model = chain[0]
            sent = body if chain[0] == body["model"] else {**body, "model": chain[0]}
            keys = [self._fallback]
            if streamed:
                return self._stream(rec, sent, keys, started)
            return self._complete(rec, sent, keys, started)
        raise last

    # -- client-key rate limits (F31, F7) -----------------------------------------------

    def _admit(self, caller: Caller, rec: RequestRecord) -> None:
        """Take a place in the client key's window, or refuse with 429 and Retry-After."""
        limits = caller.limits
        now = int(self.clock.now().timestamp())
        window, refusal = self.limiter.admit(caller.scope, limits, now)
        rec.limit_headers = _ratelimit_headers(limits, window)
        if refusal is not None:
            what = {
                "rpm": f"{limits.rpm} requests per minute",
                "tpm": f"{limits.tpm} tokens per minute",
                "parallel": f"{limits.parallel} requests at a time",
            }[refusal.reason]
            raise GatewayError(
                429,
                f"Rate limit of this API key reached: {what}. Retry after {refusal.retry_after} s.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(refusal.retry_after)},
            )
        rec.limit_scope = (caller.scope, limits.parallel is not None)

    def _reserve(self, caller: Caller, rec: RequestRecord, body: dict) -> None:
        """Reserve the request's estimated cost in the key's budget period, or refuse (F34)."""
        budget = caller.budget
        now = self.clock.now()
        start, end = budgets.period(budget.anchor, budget.duration, now)
        # validate_chat has made these positive integers within bounds.
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        answer = asked or budgets.DEFAULT_ANSWER_TOKENS
        choices = body.get("n") or 1
        prompt = tokens.count_prompt(body["messages"])
        estimate = max(0, self.prices.cost_micros(None, rec.model, Usage(prompt, answer * choices)))
        scope, period_id = f"ck:{caller.client_key_id}:budget", int(start.timestamp())

        def spent_so_far() -> int:
            self.books.flush(timeout=1.0)
            with self.engine.connect() as conn:
                return store.client_key_spend(conn, caller.client_key_id, start, end)

        spent, reserved, admitted = self.limiter.reserve(
            scope, period_id, budget.micros, estimate, spent_so_far
        )
        if not admitted:
            headers = {}
            when = "for the key's lifetime"
            if end is not None:
                headers["Retry-After"] = str(max(1, int((end - now).total_seconds() + 0.999)))
                when = f"until {end.isoformat(timespec='seconds')}"
            basis = (
                f"{prompt} prompt tokens + {answer:,} answer tokens"
                + (f" x {choices} choices" if choices > 1 else "")
                + (
                    ""
                    if asked
                    else " (the default when the request sets no max_tokens; "
                    "a smaller max_tokens needs less)"
                )
            )
            raise GatewayError(
                429,
                f"Budget of this API key reached: ${usd(spent)} spent and ${usd(reserved)} "
                f"reserved by requests in flight, of ${usd(budget.micros)} {when}; this "
                f"request would reserve ${usd(estimate)} ({basis}).",
                type="insufficient_quota",
                code="budget_exceeded",
                headers=headers,
            )
        rec.budget_ticket = (scope, period_id, estimate)

    def _release(self, rec: RequestRecord) -> None:
        """Book the request's tokens in its client key's window and free its place, and
        turn its budget reservation into its real cost (once); book the tokens in the
        serving provider key's windows too."""
        if rec.key_scopes:
            now = int(self.clock.now().timestamp())
            for scope in rec.key_scopes:
                self.limiter.settle(scope, rec.usage.total_tokens, now, False)
            rec.key_scopes = ()
        if rec.budget_ticket is not None:
            scope, period_id, estimate = rec.budget_ticket
            rec.budget_ticket = None
            self.limiter.settle_budget(scope, period_id, estimate, rec.cost_micros)
        if rec.limit_scope is None:
            return
        scope, parallel = rec.limit_scope
        rec.limit_scope = None
        now = int(self.clock.now().timestamp())
        self.limiter.settle(scope, rec.usage.total_tokens, now, parallel)

    # -- provider-key rate limits (F30, F32) ----------------------------------------------

    def _key_admission(self, rec: RequestRecord):
        """The attempt loop's admission check: a place in the key's RPM/TPM windows (and
        the model's on that key), or the seconds until there is room. Keys without such
        limits cost nothing here."""

        def admit(key: KeyRow) -> int | None:
            if not key.rate_limited:
                rec.key_scopes = ()
                return None
            now = int(self.clock.now().timestamp())
            scopes = []
            per_model = (key.model_limits or {}).get(rec.model)
            windows = [(f"pk:{key.id}:{rec.model}", per_model)] if per_model else []
            if key.rpm_limit or key.tpm_limit:
                windows.append((f"pk:{key.id}", {"rpm": key.rpm_limit, "tpm": key.tpm_limit}))
            for scope, limits in windows:
                limits = Limits(limits.get("rpm"), limits.get("tpm"))
                _, refusal = self.limiter.admit(scope, limits, now)
                if refusal is not None:
                    return refusal.retry_after
                scopes.append(scope)
            rec.key_scopes = tuple(scopes)
            return None

        return admit

    def _complete(self, rec, body, keys, started) -> ProxyResponse:
        def call(key: KeyRow, timeouts: Timeouts) -> UpstreamReply:
            reply = self.adapters[key.provider].chat(self.target(key), body, timeouts)
            if 200 <= reply.status < 300:
                reply.parsed = _json_object(reply.body)
                if reply.parsed is None:
                    raise TransportError(Outcome.BAD_RESPONSE, "upstream answered 2xx without JSON")
            return reply

        key, reply = run_attempts(
            keys, call, rec, self.settings.retry, self.health, self._key_admission(rec)
        )
        rec.provider, rec.provider_key_id, rec.status_code = (
            key.provider,
            key.id or None,
            reply.status,
        )
        if reply.parsed is not None:
            rec.usage = Usage.from_openai(reply.parsed.get("usage")) or Usage.estimate(
                body["messages"], _message_text(reply.parsed)
            )
            body_out = reply.body
            if b'"cost"' in body_out and strip_cost(reply.parsed):
                body_out = _reencoded(reply.parsed, body_out)
        else:
            rec.error = reply.body[:500].decode("utf-8", "replace")
            body_out = _client_error_body(reply)
        rec.latency_ms = int((time.perf_counter() - started) * 1000)
        self.book(rec, key)
        headers = {"Content-Type": "application/json", **_trace_headers(rec)}
        return ProxyResponse(reply.status, headers, body_out)

    def _stream(self, rec, body, keys, started) -> ProxyResponse:
        asked = body.get("stream_options") or {}
        upstream_body = {**body, "stream_options": {**asked, "include_usage": True}}

        def call(key: KeyRow, timeouts: Timeouts) -> UpstreamReply:
            reply = self.adapters[key.provider].chat_stream(
                self.target(key), upstream_body, timeouts
            )
            if 200 <= reply.status < 300:
                try:
                    reply.first_chunk = next(reply.chunks, b"")
                except TransportError:
                    reply.close()
                    raise
                if not reply.first_chunk:
                    reply.close()
                    raise TransportError(Outcome.BAD_RESPONSE, "upstream stream was empty")
            return reply

        key, reply = run_attempts(
            keys, call, rec, self.settings.retry, self.health, self._key_admission(rec)
        )
        rec.provider, rec.provider_key_id, rec.status_code = (
            key.provider,
            key.id or None,
            reply.status,
        )
        headers = _trace_headers(rec)
        if reply.status >= 300:
            rec.error = reply.body[:500].decode("utf-8", "replace")
            rec.latency_ms = int((time.perf_counter() - started) * 1000)
            self.book(rec, key)
            return ProxyResponse(
                reply.status,
                {"Content-Type": "application/json", **headers},
                _client_error_body(reply),
            )
        rec.ttft_ms = int((time.perf_counter() - started) * 1000)
        relay = _StreamRelay(
            self, rec, key, reply, body["messages"], not asked.get("include_usage"), started
        )
        headers.update(
            {
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        return ProxyResponse(200, headers, chunks=_Relayed(relay))

    # -- models -----------------------------------------------------------------------

    def models(self, profile: str, caller: Caller = MASTER) -> list[dict]:
        """The models the profile's keys serve (those the caller may use), with the
        provider that owns each."""
        profile_id = self.profiles.resolve(profile).id
        with self.engine.connect() as conn:
            keys = store.load_keys(conn, profile_id, periods.local_day(self.clock.now()))
        owners: dict[str, str] = {}
        for key in keys:
            if key.status == "disabled":
                continue
            names = key.models if "*" not in key.models else (key.discovered_models or [])
            for name in names:
                if caller.models is None or name in caller.models:
                    owners.setdefault(name, key.provider)
        table = self.routes.table()
        for alias in table.aliases():  # an alias is listed when its target is served
            target = table.hop(alias).model
            served = any(k.serves(target) for k in keys if k.status != "disabled")
            if served and (caller.models is None or alias in caller.models):
                owners.setdefault(alias, "keyrelay")
        return [
            {"id": name, "object": "model", "created": 0, "owned_by": owner}
            for name, owner in sorted(owners.items())
        ]

    def model(self, profile: str, model_id: str, caller: Caller = MASTER) -> dict:
        """One model, or a 404 naming where to look."""
        for entry in self.models(profile, caller):
            if entry["id"] == model_id:
                return entry
        raise GatewayError(
            404,
            f"The model '{model_id}' is not served in profile '{profile}'. "
            "GET /v1/models lists the models you can use.",
            code="model_not_found",
            param="model",
        )

    # -- key test (F15) ----------------------------------------------------------------

    def test_key(self, key_id: int) -> dict:
        """A cheap real call (the model list): ok / auth_failed / rate_limited / unreachable;
        secret_unreadable / secret_insecure (no call) when the secret must be re-entered."""
        now = self.clock.now()
        with self.engine.connect() as conn:
            key = store.load_key(conn, key_id, periods.local_day(now))
        if key.status == SECRET_INSECURE:
            return _secret_result(SECRET_INSECURE)
        try:
            target = self.target(key)
        except SecretUnreadable:
            return _secret_result(SECRET_UNREADABLE)
        try:
            reply = self.adapters[key.provider].list_models(target, TEST_TIMEOUTS)
        except TransportError as exc:
            return self._test_result(key, "unreachable", None, str(exc), {"last_error": str(exc)})
        if 200 <= reply.status < 300:
            models = _model_ids(_json_object(reply.body))
            values = {"discovered_models": models, "consecutive_failures": 0, "last_error": None}
            if key.status in ("auth_failed", "cooling_down", SECRET_UNREADABLE):
                values.update(status="active", cooldown_until=None)
            return self._test_result(key, "ok", reply.status, None, values, models)
        error = f"HTTP {reply.status}: {reply.body[:200].decode('utf-8', 'replace')}"
        if 400 <= reply.status < 500 and reply.status not in _TEST_SAYS_NOTHING_OF_THE_KEY:
            # A trivial request refused (LiteLLM answers a bad key with 400 "No connected
            # db."): the key is not trusted until a test passes (re-validation retries it).
            values = {"last_error": error}
            if key.status != "disabled":
                values["status"] = "auth_failed"
            result = "auth_failed" if reply.status in (401, 403) else "error"
            return self._test_result(key, result, reply.status, error, values)
        result = "rate_limited" if reply.status == 429 else "error"
        return self._test_result(key, result, reply.status, error, {"last_error": error})

    def _test_result(self, key, result, status, error, values, models=None) -> dict:
        with self.engine.begin() as conn:
            store.record_test(conn, key.id, {**values, "updated_at": self.clock.now()})
        self.keys.forget()
        return {"result": result, "status_code": status, "error": error, "models": models}

    def book(self, rec: RequestRecord, key: KeyRow | None = None) -> None:
        """Write a finished request to the books, and mirror it in the key cache."""
        if not rec.recorded:
            rec.cost_micros = self.prices.cost_micros(rec.provider, rec.model, rec.usage)
        self._release(rec)
        now = self.clock.now()
        ok = key is not None and 200 <= rec.status_code < 300
        touch = ok and needs_touch(key, now)
        accounting.record(self.books, rec, now, touch_key=touch)
        if key is not None:
            apply_booking(key, rec.usage.total_tokens, rec.cost_micros, touch, now)
        if self.alerts is not None:
            self.alerts.after_booking(rec)


class _Relayed:
    """The stream's chunks for the WSGI server, whose `close()` books the request even
    when the client went away before the first chunk was asked for (a generator that
    never started runs no `finally`)."""

    def __init__(self, relay: _StreamRelay) -> None:
        self.relay = relay
        self.chunks = relay.run()

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        self.chunks.close()
        self.relay.abandon()


class _StreamRelay:
    """Relays an upstream stream to the client and books it exactly once, however it ends."""

    def __init__(self, gateway, rec, key, reply, messages, hide_usage, started) -> None:
        self.gateway, self.rec, self.key, self.reply = gateway, rec, key, reply
        self.messages, self.started = messages, started
        self.filter = SSEFilter(hide_usage_chunk=hide_usage)

    def run(self) -> Iterator[bytes]:
        """Yield events as they arrive; book the request before the final event goes out."""
        try:
            yield from self._relay()
        except TransportError as exc:
            self._finish(502, f"upstream stream broke: {exc}")
            yield error_event(
                "The upstream stream broke before it finished; the tokens sent so far were "
                "counted. Retry the request.",
                "upstream_stream_broken",
            )
        finally:
            self.reply.close()
            # Only a client that went away leaves the books unwritten by now.
            self._finish(499, "client disconnected before the stream finished")

    def _relay(self) -> Iterator[bytes]:
        for chunk in itertools.chain((self.reply.first_chunk,), self.reply.chunks):
            events = self.filter.feed(chunk)
            if self.filter.done:
                # Book the request before [DONE] leaves: an answer the client got is counted.
                self._finish(200, None)
                yield b"".join(events)
                self._drain()
                return
            if events:
                yield b"".join(events)
        if self.filter.usage is None:
            raise TransportError(Outcome.CONNECTION_ERROR, "stream ended without [DONE]")
        self._finish(200, None)

    def abandon(self) -> None:
        """The client is gone: free the upstream and book what happened (once)."""
        if not self.rec.recorded:
            self.reply.close()
            self._finish(499, "client disconnected before the stream finished")

    def _drain(self) -> None:
        """Read the upstream to its end so its connection can be reused."""
        try:
            for _ in self.reply.chunks:
                pass
        except TransportError:
            pass

    def _finish(self, status: int, error: str | None) -> None:
        rec = self.rec
        if rec.recorded:
            return
        rec.status_code, rec.error = status, error
        usage = Usage.from_openai(self.filter.usage)
        rec.usage = usage or Usage.estimate(self.messages, self.filter.completion_text())
        rec.latency_ms = int((time.perf_counter() - self.started) * 1000)
        self.gateway.book(rec, self.key)


FALLBACK_KEY_ID = 0
# Client errors of a key test that are no verdict on the key: an upstream without a model
# list (404/405), a timeout or conflict on its side, a rate limit.
_TEST_SAYS_NOTHING_OF_THE_KEY = {404, 405, 408, 409, 429}
# A chain goes on to its next model after these (the model has no usable key, or every
# key failed); anything else (a bad request, a client-key limit) ends the request.
_NEXT_IN_CHAIN = {
    "model_not_found",
    "no_available_keys",
    "provider_keys_at_limit",
    "upstream_rate_limited",
    "upstream_failed",
    "deadline_exceeded",
}
# The pool had nothing to offer: where the environment fallback key steps in.
_POOL_EMPTY = {"model_not_found", "no_available_keys", "provider_keys_at_limit"}

# Errors after which waiting can help: no key free now, but one will be (F32).
_WAITABLE = {"no_available_keys", "provider_keys_at_limit", "upstream_rate_limited"}


def _wait_for_key(err: GatewayError, allowed: int | None, waited: float) -> float | None:
    """Seconds to wait before trying the profile's keys again, or None to fail now: only
    when the profile allows waiting and a key comes free within what is left of it."""
    if not allowed or err.code not in _WAITABLE:
        return None
    retry_after = err.headers.get("Retry-After")
    if retry_after is None:
        return None
    pause = float(retry_after)
    return pause if waited + pause <= allowed else None


def _model_not_allowed(model: str, caller: Caller) -> GatewayError:
    allowed = ", ".join(sorted(caller.models))
    return GatewayError(
        403,
        f"This API key may not use the model '{model}'. Allowed: {allowed}.",
        type="permission_error",
        code="model_not_allowed",
        param="model",
    )


def _trace_headers(rec: RequestRecord) -> dict[str, str]:
    headers = {
        "x-keyrelay-request-id": rec.request_id,
        "x-keyrelay-attempts": str(len(rec.attempts)),
    }
    # Which provider answered (or failed last); `none` when no upstream was asked.
    headers["x-keyrelay-provider"] = rec.provider or "none"
    if rec.limit_headers:
        headers.update(rec.limit_headers)
    return headers


def _ratelimit_headers(limits: Limits, window: Window) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the client key's limits (F7)."""
    headers = {}
    if limits.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(limits.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - window.requests))
        headers["x-ratelimit-reset-requests"] = f"{window.requests_reset}s"
    if limits.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(limits.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - window.tokens))
        headers["x-ratelimit-reset-tokens"] = f"{window.tokens_reset}s"
    return headers


def _reencoded(value: dict, original: bytes) -> bytes:
    """The value as JSON again; the original bytes if it cannot be (nested too deep)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return original


def _json_object(data: bytes) -> dict | None:
    try:
        value = orjson.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _secret_result(status: str) -> dict:
    """A key test's answer for a key whose secret must be re-entered (nothing was called)."""
    error = STATUS_SENTENCES[status]
    return {"result": status, "status_code": None, "error": error, "models": None}


def _model_ids(listing: dict | None) -> list[str] | None:
    """Model ids from an OpenAI model list."""
    data = (listing or {}).get("data")
    if not isinstance(data, list):
        return None
    return sorted({m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)})


def _message_text(completion: dict) -> str:
    """All choice texts of a chat.completion, for estimating its tokens."""
    texts = []
    for choice in completion.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            texts.append(message["content"])
    return "".join(texts)


def _client_error_body(reply: UpstreamReply) -> bytes:
    """The upstream's error as is when it is OpenAI-shaped; wrapped when it is not."""
    parsed = _json_object(reply.body)
    if parsed is not None and isinstance(parsed.get("error"), dict):
        return reply.body
    message = reply.body[:500].decode("utf-8", "replace") or f"upstream answered {reply.status}"
    error = GatewayError(reply.status, f"Upstream rejected the request: {message}")
    return json.dumps(error.body()).encode()

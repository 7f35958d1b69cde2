"""The Gateway: what the proxy blueprint calls. It composes the proxy's stages
(gateway/proxy/): a dialect parses the request, admission takes its ticket, the chain
walks its models, attempts try keys, relay answers in the client's dialect, booking
writes it down. The model list is gateway/catalog.py's, the key test gateway/keytest.py's."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from gateway import selection
from gateway.accounting import RequestRecord
from gateway.books import Books
from gateway.catalog import ModelList
from gateway.clientkeys import MASTER, Caller, Callers
from gateway.clock import Clock
from gateway.dialects.anthropic_messages import AnthropicMessages
from gateway.dialects.base import Dialect
from gateway.dialects.openai_chat import OpenAIChat
from gateway.dialects.openai_other import OpenAICompletions, OpenAIEmbeddings
from gateway.dialects.openai_responses import OpenAIResponses
from gateway.errors import GatewayError, database_down, database_unavailable, journal_full
from gateway.journal import DatabaseIdentity
from gateway.keycache import KeyCache
from gateway.keytest import KeyTester
from gateway.limiter import SharedLimiter
from gateway.policy import Outcome
from gateway.pricing import Prices
from gateway.providers import ADAPTERS
from gateway.providers.base import Timeouts, TransportError, UpstreamReply
from gateway.providers.http import UpstreamClient
from gateway.proxy.admission import Admission, Refused
from gateway.proxy.attempts import KeyHealth, RetrySettings, run_attempts
from gateway.proxy.booking import Booking
from gateway.proxy.breaker import Breaker
from gateway.proxy.candidates import Candidates, Profiles
from gateway.proxy.chain import Chain, ContextOverflowed
from gateway.proxy.relay import ProxyResponse, Relay, Served, trace_headers
from gateway.responses_store import ResponseStore
from gateway.routes import Routes
from gateway.secrets import SecretBox
from gateway.store import KeyRow

__all__ = ["FALLBACK_KEY_ID", "Gateway", "GatewaySettings", "ProxyResponse"]

FALLBACK_KEY_ID = 0
log = logging.getLogger(__name__)


@dataclass
class GatewaySettings:
    """Everything the gateway reads from configuration."""

    retry: RetrySettings
    strategy: str = selection.MOST_REMAINING
    pool_size: int = 256
    use_paid_models: bool = True
    # (provider, secret, base_url) of the environment fallback key (F26), or None.
    fallback_key: tuple[str, str, str] | None = None
    # The circuit per upstream: (failures, window seconds, cooldown seconds).
    breaker: tuple[int, float, float] = (5, 30.0, 30.0)
    # KEYRELAY_REDIS_URL / _FAILURE / _LEASE_SECONDS: counters shared by several hosts.
    redis_url: str | None = None
    redis_failure: str = "mixed"
    redis_lease_seconds: float = 15.0
    # KEYRELAY_JOURNAL_RESERVE_BYTES: disk space the booking journal keeps allocated ahead.
    journal_reserve: int = 0


class Gateway:
    """Serves the proxy's dialects and model lists from a profile's pool of provider keys."""

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
        self.profiles = Profiles(engine)
        self.books = Books(engine, journal_dir, database, settings.journal_reserve)
        self.keys = KeyCache(engine, self.books.unapplied_tokens)
        self.breaker = Breaker(
            self.clock, *settings.breaker, path=Path(journal_dir).parent / "circuits.bin"
        )
        self.health = KeyHealth(
            engine, self.clock, settings.retry, on_change=self.keys.forget, breaker=self.breaker
        )
        self.callers = Callers(engine, master_key, self.clock)
        self.prices = Prices(engine)
        self.routes = Routes(engine)
        self.redis = None  # gateway/redis_shared.py's pieces when Redis is configured
        self.limiter = self._limiter(settings, journal_dir, database.id if database else "")
        self.responses = ResponseStore(engine)
        self.candidates = Candidates(engine, self.keys, secrets, self.clock, settings.strategy)
        self.catalog = ModelList(engine, self.profiles, self.routes, self.clock)
        self.tester = KeyTester(engine, self.candidates, self.adapters, self.keys, self.clock)
        self.admission = Admission(engine, self.books, self.limiter, self.prices, self.clock)
        self.admission.routes = self.routes
        self.candidates.limiter = self.limiter
        self.candidates.prices = self.prices
        self.booking = Booking(self.books, self.prices, self.keys, self.clock, self.profiles)
        self.relay = Relay(self.booking)
        self.chain = Chain(
            self.routes,
            self.candidates,
            self.clock,
            settings.use_paid_models,
            self._fallback_row(settings, secrets),
        )
        self.dialects: dict[str, Dialect] = {
            dialect.name: dialect
            for dialect in (
                OpenAIChat(),
                AnthropicMessages(),
                OpenAIEmbeddings(),
                OpenAICompletions(),
                OpenAIResponses(self.responses, self.clock),
            )
        }

    def _limiter(self, settings: GatewaySettings, journal_dir: Path, database_id: str):
        """This host's limits file, or counters in Redis shared by every host."""
        if not settings.redis_url:
            return SharedLimiter(Path(journal_dir).parent / "limits.bin", database_id)
        from gateway import redis_limiter, redis_shared  # imported only when configured

        client = redis_limiter.connect(settings.redis_url)
        namespace = f"kr:{database_id[:16]}:"
        self.redis = redis_shared.Shared(client, namespace, settings.redis_lease_seconds)
        self._share_caches(self.redis.invalidations)
        return redis_limiter.RedisLimiter(client, namespace, settings.redis_failure)

    def _share_caches(self, invalidations) -> None:
        """With Redis, a cache dropped in this process is dropped in every process."""
        self.keys.on_forget = lambda: invalidations.publish("keys")
        invalidations.listen("keys", self.keys.drop)
        for topic, cache in (
            ("profiles", self.profiles),
            ("routes", self.routes),
            ("callers", self.callers),
            ("prices", self.prices),
        ):
            invalidations.share(topic, cache)

    @staticmethod
    def _fallback_row(settings: GatewaySettings, secrets: SecretBox) -> KeyRow | None:
        if settings.fallback_key is None:
            return None
        provider, secret, base_url = settings.fallback_key
        return KeyRow(  # the environment key, never written back (id 0)
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

    @property
    def alerts(self):
        """Budget alerts (alerts.py), attached by create_app when set up."""
        return self.booking.alerts

    @alerts.setter
    def alerts(self, value) -> None:
        self.booking.alerts = value
        if value is not None and self.redis is not None:
            self.redis.invalidations.share("alerts", value)

    def forget_limits(self, owner: str) -> None:
        """Free the shared windows and budget entries of a revoked or deleted key
        (`ck:7`, `pk:3`), so a key given the same id later starts clean."""
        self.limiter.forget(owner)

    def close(self) -> None:
        """Write what is queued to the database; close pooled upstream connections."""
        self.books.close()
        self._http.clear()
        if self.redis is not None:
            self.limiter.close()  # sends the settlements still pending
            self.redis.close()

    # -- the proxy ---------------------------------------------------------------------

    def chat(self, profile: str, body: object, caller: Caller = MASTER) -> ProxyResponse:
        """Serve one chat completion (streaming or not); errors raise GatewayError."""
        return self.serve("openai_chat", profile, body, caller)

    def serve(self, dialect_name: str, profile: str, body: object, caller: Caller) -> ProxyResponse:
        """Serve one request of a dialect; errors raise GatewayError (with trace headers)."""
        dialect = self.dialects[dialect_name]
        model = body.get("model") if isinstance(body, dict) else None
        streamed = isinstance(body, dict) and body.get("stream") is True
        rec = RequestRecord(
            self.clock.now(),
            dialect.endpoint,
            model if isinstance(model, str) else None,
            streamed,
            client_key_id=caller.client_key_id,
        )
        ticket = self.admission.ticket()
        started = time.perf_counter()
        try:
            if not self.books.has_room():  # its answer could not be recorded
                raise journal_full()
            found = self.profiles.resolve(profile)
            rec.profile_id = found.id
            request = dialect.parse(body)
            rec.requested_model = request.model
            dialect.prepare(request, caller.client_key_id)
            self.admission.admit(caller, request, ticket)
            route = self.routes.table().policy(request.model)
            if route.strategy is not None:  # the route's key selection over the profile's
                found = found._replace(strategy=route.strategy)
            served = Served(request, dialect, rec, ticket, started, found.strategy)
            dispatch = self._dispatch(served)
            return self.chain.serve(profile, found, request, rec, dispatch, route)
        except (GatewayError, Refused) as caught:
            # The admission was decided first: its refusal answers, whatever came after.
            err = ticket.refusal() or caught
            self._refused(rec, ticket, started, err)
            if err is caught:
                raise
            raise err from None
        except Exception as caught:
            if not database_down(caught):
                ticket.release()  # a bug must not keep the client key's place for ever
                raise
            # The database went away mid-request: a 503, booked (the journal keeps the
            # row until the database is back).
            log.warning("database unusable while serving %s: %s", rec.request_id, caught)
            err = database_unavailable(caught)
            self._refused(rec, ticket, started, err)
            raise err from None
        except BaseException:
            ticket.release()
            raise

    def _refused(self, rec: RequestRecord, ticket, started: float, err: GatewayError) -> None:
        """Book a request answered with an error, and give the error the trace headers."""
        rec.status_code, rec.error = err.status, err.message
        rec.latency_ms = int((time.perf_counter() - started) * 1000)
        self.booking.book(rec, ticket)
        err.headers.update(trace_headers(rec, ticket))

    def _dispatch(self, served: Served):
        """Serve one model of the chain with its keys: the attempts, then the relay."""
        request, rec = served.request, served.rec
        strategy = served.strategy or self.settings.strategy
        key_windows = self.admission.key_windows(
            lambda: rec.model, served.ticket, count_busy=strategy == selection.LEAST_BUSY
        )

        def dispatch(model: str, keys: list[KeyRow]) -> ProxyResponse:
            body = request.for_model(model)  # read again per hop: pruning replaces it

            def ask(adapter, target, timeouts: Timeouts) -> UpstreamReply:
                operation, stream = request.operation, request.stream
                if operation == "embeddings":
                    return adapter.embeddings(target, body, timeouts)
                if operation == "completions":
                    return adapter.completions(target, body, timeouts, stream, request.wants_usage)
                if not stream:
                    return adapter.chat(target, body, timeouts, request.native)
                return adapter.chat_stream(
                    target, body, timeouts, request.wants_usage, request.native
                )

            def call(key: KeyRow, timeouts: Timeouts) -> UpstreamReply:
                served.ticket.admitted()  # the admission's answer, read as late as can be
                adapter, target = self.adapters[key.provider], self.candidates.target(key)
                unresolved = request.extra.get("unresolved")
                if unresolved is not None and not adapter.passes_through(target, request.native):
                    raise unresolved  # a conversation only a passthrough upstream could know
                scrub = target.scrub  # what the upstream says never carries the key's secret
                try:
                    reply = scrub.reply(ask(adapter, target, timeouts))
                except TransportError as exc:
                    raise scrub.error(exc) from None
                if reply.stream is not None:  # 2xx: its first bytes decide the attempt
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
                keys, call, rec, self.settings.retry, self.health, key_windows
            )
            if reply.overflow is not None:  # the chain decides, as the route says
                answer = functools.partial(self.relay.respond, served, key, reply)
                raise ContextOverflowed(model, reply.overflow, answer)
            return self.relay.respond(served, key, reply)

        return dispatch

    def refuse(self, endpoint: str, profile: str | None, caller: Caller, err: GatewayError):
        """Book a request refused before its body could be read (malformed JSON, too
        large, a profile it may not use): every authenticated call to a proxy endpoint
        that spends tokens gets its one log row. The error gets the trace headers."""
        rec = RequestRecord(
            self.clock.now(), endpoint, None, False, client_key_id=caller.client_key_id
        )
        if profile is not None:
            try:
                rec.profile_id = self.profiles.resolve(profile).id
            except Exception as exc:  # logged without a profile
                if not isinstance(exc, GatewayError) and not database_down(exc):
                    raise
        rec.status_code, rec.error = err.status, err.message
        self.booking.book(rec)
        err.headers.update(trace_headers(rec, None))

    def book(self, rec: RequestRecord, key: KeyRow | None = None) -> None:
        """Book a finished request (for callers outside the proxy path)."""
        self.booking.book(rec, None, key)

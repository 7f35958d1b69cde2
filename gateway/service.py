"""The Gateway: what the proxy blueprint calls. It composes the proxy's stages
(gateway/proxy/) in one loop, `serve`: a dialect parses the request, admission takes its
ticket; for each model the chain walks, candidates give the keys and for each key infer
asks its upstream, attempts judging each outcome; relay answers in the client's dialect
and booking writes it down. The stages take data and return data or decisions; none calls
back here. The model list is
gateway/keys/catalog.py's, the key test gateway/keys/keytest.py's."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from gateway.clock import Clock
from gateway.dialects.anthropic_messages import AnthropicMessages
from gateway.dialects.base import Dialect
from gateway.dialects.openai_chat import OpenAIChat
from gateway.dialects.openai_other import OpenAICompletions, OpenAIEmbeddings
from gateway.dialects.openai_responses import OpenAIResponses
from gateway.errors import GatewayError, database_down, database_unavailable, journal_full
from gateway.keys import selection
from gateway.keys.cache import KeyCache
from gateway.keys.catalog import ModelList
from gateway.keys.client_keys import MASTER, Caller, Callers
from gateway.keys.keytest import KeyTester
from gateway.keys.secrets import SecretBox, SecretUnreadable
from gateway.ledger.accounting import RequestRecord
from gateway.ledger.books import Books
from gateway.ledger.journal import DatabaseIdentity
from gateway.ledger.pricing import Prices
from gateway.limits import Limiter
from gateway.limits.local import SharedLimiter
from gateway.providers import ADAPTERS
from gateway.providers.base import Timeouts, TransportError
from gateway.providers.carry import Unsupported
from gateway.providers.http import UpstreamClient
from gateway.proxy.admission import Admission, Refused
from gateway.proxy.attempts import Attempts, KeyHealth, RetrySettings
from gateway.proxy.booking import Booking
from gateway.proxy.breaker import Breaker
from gateway.proxy.candidates import Candidates, Profiles
from gateway.proxy.chain import Chain
from gateway.proxy.held import HeldResponses
from gateway.proxy.infer import infer, refuse_uncarried
from gateway.proxy.pins import Pins
from gateway.proxy.relay import ProxyResponse, Relay, Served, trace_headers
from gateway.responses_store import ResponseStore
from gateway.routes import Routes
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
        self.health = KeyHealth(engine, self.clock, settings.retry, self.keys, breaker=self.breaker)
        self.callers = Callers(engine, master_key, self.clock)
        self.prices = Prices(engine)
        self.routes = Routes(engine)
        self.redis = None  # gateway/redis_shared.py's pieces when Redis is configured
        self.limiter = self._limiter(settings, journal_dir, database.id if database else "")
        self.responses = ResponseStore(engine)
        self.pins = Pins(engine, self.clock)
        self.candidates = Candidates(engine, self.keys, secrets, self.clock, settings.strategy)
        self.catalog = ModelList(engine, self.profiles, self.routes, self.clock)
        wait = Timeouts(settings.retry.connect_timeout, settings.retry.read_timeout)
        self.tester = KeyTester(engine, self.candidates, self.adapters, self.keys, self.clock, wait)
        self.admission = Admission(engine, self.books, self.limiter, self.prices, self.clock)
        self.admission.routes = self.routes
        self.candidates.limiter = self.limiter
        self.candidates.prices = self.prices
        wait = Timeouts(settings.retry.connect_timeout, settings.retry.read_timeout)
        self.held = HeldResponses(self.responses, self.pins, self.candidates, self.adapters, wait)
        self.booking = Booking(self.books, self.prices, self.keys, self.clock, self.profiles)
        self.relay = Relay(self.booking)
        self.chain = Chain(
            self.routes, self.clock, settings.use_paid_models, self._fallback_row(settings, secrets)
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

    def _limiter(self, settings: GatewaySettings, journal_dir: Path, database_id: str) -> Limiter:
        """This host's limits file, or counters in Redis shared by every host."""
        if not settings.redis_url:
            return SharedLimiter(Path(journal_dir).parent / "limits.bin", database_id)
        from gateway import redis_shared
        from gateway.limits import redis as redis_limiter  # imported only when configured

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

    def serve(
        self, dialect_name: str, profile: str, body: object, caller: Caller, headers=None
    ) -> ProxyResponse:
        """Serve one request of a dialect: admit it; for each model of its chain, try the
        model's keys (infer) until an upstream answers; relay the answer, booked, to the
        client. Errors raise GatewayError (with trace headers). `headers`: the client's
        that KeyRelay reads (gateway/proxy/client_headers.py)."""
        dialect = self.dialects[dialect_name]
        rec = _record(dialect, body, caller, self.clock.now())
        ticket = self.admission.ticket()
        started = time.perf_counter()
        try:
            served, found, walk = self._admit(
                dialect, profile, body, caller, rec, ticket, started, headers
            )
            for hop in walk:  # the route's target, its fallbacks, the environment key (chain.py)
                try:
                    if hop.keys is None:  # a pruned prompt goes again to the same keys
                        hop.keys = self.candidates(profile, found, hop.model)
                    key, reply = self._try_keys(served, hop.model, hop.keys)
                    self.pins.served(served.request, key, reply, rec.client_key_id)
                except GatewayError as err:
                    if walk.goes_on_after(err):  # to the next model
                        continue
                    raise
                if reply.overflow is not None:  # too long for the model: as the route says
                    answer = walk.overflowed(key, reply)
                    if answer is None:  # a larger model, or the same one pruned, is tried
                        continue
                    key, reply = answer
                return self.relay.respond(served, key, reply)  # booked (a stream: as it ends)
            return self.relay.respond(served, *walk.end())  # an overflow's error, or raised
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

    def _admit(
        self, dialect: Dialect, profile: str, body, caller: Caller, rec, ticket, started, headers
    ):
        """Parse the request and admit it (the answer is read before the first upstream
        call): the request on its way, its profile, and its walk along the chain."""
        if not self.books.has_room():  # its answer could not be recorded
            raise journal_full()
        found = self.profiles.resolve(profile)
        rec.profile_id = found.id
        request = dialect.parse(body)
        request.headers = headers or {}
        request.format = dialect.format
        rec.requested_model = request.model
        dialect.prepare(request, caller.client_key_id)
        self.admission.admit(caller, request, ticket)
        self.pins.check(request, caller.client_key_id, found.id, profile)  # its key reachable?
        route = self.routes.table().policy(request.model)
        if route.strategy is not None:  # the route's key selection over the profile's
            found = found._replace(strategy=route.strategy)
        served = Served(request, dialect, rec, ticket, started, found.strategy)
        return served, found, self.chain.walk(found, request, rec, route)

    def _try_keys(self, served: Served, model: str, keys: list[KeyRow]):
        """One model's keys in turn until an upstream answers (or the request's own fault
        comes back): (key, reply). GatewayError naming every key's failure if none did."""
        body = served.request.for_model(model)  # read again per hop: pruning replaces it
        count_busy = (served.strategy or self.settings.strategy) == selection.LEAST_BUSY
        tries = Attempts(self.settings.retry, served.rec, self.clock)
        # A conversation's key first (the one holding its state or its prompt cache).
        keys = self.pins.order(served.request, keys, served.rec.client_key_id)
        for key in keys:
            timeouts = tries.timeouts()  # None: out of attempts, or past the deadline
            if timeouts is None:
                break
            adapter = self.adapters[key.provider]
            try:  # before the key takes a place in its RPM/TPM windows
                target = self.candidates.target(key, served.request.headers)
                refuse_uncarried(adapter, target, served.request, body)
            except SecretUnreadable:
                tries.secret_unreadable(key)
                continue
            except Unsupported as refusal:  # no fault of the key: another kind may carry it
                tries.cannot_carry(refusal)
                continue
            if (wait := self.admission.take_key(served.ticket, key, model, count_busy)) is not None:
                tries.full(wait)  # at its RPM/TPM or concurrency limit: passed over
                continue
            if not self.breaker.allow(key.base_url):
                tries.circuit_open(key)  # its upstream is failing: not even tried
                continue
            started = time.perf_counter()
            try:
                answer = infer(adapter, target, served.request, body, timeouts)
            except TransportError as exc:
                answer = exc
            except Unsupported as refusal:  # a refusal only the adapter could see
                self.breaker.release(key.base_url)
                tries.cannot_carry(refusal)
                continue
            except GatewayError:  # the request's own fault (a 400 before any call): not the key's
                self.breaker.release(key.base_url)
                raise
            decision, reply, error = tries.judge(key, answer, started)
            self.health.record(key, decision, reply, error, model)  # circuit, cooldown…
            if not decision.fail_over:
                return key, reply
        raise tries.failed(self.breaker)

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


def _record(dialect: Dialect, body: object, caller: Caller, now) -> RequestRecord:
    """The request's log row, as much as is known before its body is read."""
    model = body.get("model") if isinstance(body, dict) else None
    streamed = isinstance(body, dict) and body.get("stream") is True
    return RequestRecord(
        now,
        dialect.endpoint,
        model if isinstance(model, str) else None,
        streamed,
        client_key_id=caller.client_key_id,
    )

"""Chain: the models a request may be served by (its route's target, then fallbacks,
F20/F25), the environment fallback key (F26), waiting for a key to come free (F32), and
what an upstream's "prompt too long" does (issue 12): the route's `on_context_overflow`
sends its error back, moves on to the next model of the chain, or prunes the oldest turns
and asks the same model again.

A `Walk` is one request's way along its chain: iterated, it gives the next hop (a model,
and the keys to try when they are not the profile's); told how a hop ended (`goes_on_after`
an error, `overflowed`), it decides what comes next; `end()` says how a walk that found no
answer ends. It calls nothing above it: the gateway asks the keys and the upstreams."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway import pruning
from gateway.dialects.base import ProxyRequest
from gateway.errors import GatewayError
from gateway.ledger.accounting import RequestRecord
from gateway.providers.base import ContextOverflow, UpstreamReply
from gateway.routes import FALLBACK, NO_ROUTE, PRUNE, RoutePolicy, Routes
from gateway.store import KeyRow, ProfileRow

# A chain goes on to its next model after these (the model has no usable key, or every
# key failed); anything else (a bad request, a client-key limit) ends the request.
NEXT_IN_CHAIN = {
    "model_not_found",
    "no_available_keys",
    "provider_keys_at_limit",
    "upstream_rate_limited",
    "upstream_failed",
    "deadline_exceeded",
    "unsupported_by_provider",  # the model's keys cannot carry a field; a later one may
}
# After a refusal, what a later model said instead when it could not even try: the refusal
# answers then (it names what to change), not "no key serves it".
_SAYS_LESS_THAN_A_REFUSAL = {"model_not_found", "no_available_keys", "unsupported_by_provider"}
# The pool had nothing to offer: where the environment fallback key steps in.
POOL_EMPTY = {"model_not_found", "no_available_keys", "provider_keys_at_limit"}
# Errors after which waiting can help: no key free now, but one will be (F32).
WAITABLE = {"no_available_keys", "provider_keys_at_limit", "upstream_rate_limited"}

# Prompts pruned and sent again per model, at most (each round drops at least one turn).
MAX_PRUNE_ROUNDS = 3
ANTHROPIC = "anthropic"

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Hop:
    """One model of the chain to serve the request with: `keys` None means the profile's
    keys for it (the gateway fills them in; a pruned prompt goes again to the same keys),
    else the environment fallback key."""

    model: str
    keys: list[KeyRow] | None = None
    fallback: bool = False  # the environment fallback key's hop
    rounds: int = 0  # times its prompt was pruned and sent again
    # The first "prompt too long" on this model: (key, reply), its error if pruning fails.
    first: tuple[KeyRow, UpstreamReply] | None = None


class Chain:
    """The chain settings every request's walk starts from."""

    def __init__(self, routes: Routes, clock, use_paid_models: bool, fallback: KeyRow | None):
        self.routes, self.clock = routes, clock
        self.use_paid_models, self.fallback = use_paid_models, fallback

    def walk(
        self,
        profile: ProfileRow,
        request: ProxyRequest,
        rec: RequestRecord,
        route: RoutePolicy = NO_ROUTE,
    ) -> Walk:
        """The request's way along its models (paid ones as the profile allows)."""
        paid = profile.use_paid_models
        models = self.routes.table().chain(
            request.model, self.use_paid_models if paid is None else paid
        )
        wait = profile.wait_for_key_seconds
        return Walk(models, route, self.fallback, wait, request, rec, self.clock)


class Walk:
    """One request's way along its chain of models; see the module's docstring."""

    __slots__ = (
        "models", "route", "fallback", "allowed", "request", "rec", "clock", "waited",
        "index", "hop", "again", "last", "overflow", "refusal",
    )  # fmt: skip

    def __init__(
        self,
        models: list[str],
        route: RoutePolicy,
        fallback: KeyRow | None,
        allowed: int | None,
        request: ProxyRequest,
        rec: RequestRecord,
        clock,
    ) -> None:
        self.models, self.route, self.fallback, self.allowed = models, route, fallback, allowed
        self.request, self.rec, self.clock = request, rec, clock
        self.waited = 0.0
        self._start()

    def _start(self) -> None:
        """From the chain's first model (again, after waiting for a key)."""
        self.index = 0
        self.hop: Hop | None = None
        self.again = False  # the same hop next: its prompt was pruned
        self.last: GatewayError | None = None  # the last model's error, if no model answers
        self.refusal: GatewayError | None = None  # the first field a model's keys refused
        # The first overflow, (model, key, reply): its error answers if no model fits.
        self.overflow: tuple[str, KeyRow, UpstreamReply] | None = None

    def __iter__(self) -> Walk:
        return self

    def __next__(self) -> Hop:
        """The next hop: the same model pruned, the next model, the environment key, or
        the chain again from its start once a key comes free (the clock waits)."""
        if self.again:
            self.again = False
            return self.hop
        models = self.models
        if self.index < len(models):
            model = models[self.index]
            self.index += 1
            self.rec.model = model
            self.hop = Hop(model)
            return self.hop
        if self.overflow is not None:  # nothing fits: the first overflow's error answers
            raise StopIteration
        fallback = self.fallback
        if fallback is not None and not self.hop.fallback and self.last.code in POOL_EMPTY:
            self.rec.model = models[0]
            self.hop = Hop(models[0], [fallback], fallback=True)
            return self.hop
        pause = wait_for_key(self.last, self.allowed, self.waited)
        if pause is None:
            raise StopIteration
        self.waited += pause
        self.clock.sleep(pause)
        self._start()
        return self.__next__()

    def goes_on_after(self, err: GatewayError) -> bool:
        """Whether the walk goes on after this hop's error (the model has no usable key, or
        every key failed); False when the error ends the request."""
        if err.code not in NEXT_IN_CHAIN:
            return False
        if err.code == "unsupported_by_provider" and self.refusal is None:
            self.refusal = err
        self.last = err
        return True

    def overflowed(self, key: KeyRow, reply: UpstreamReply) -> tuple[KeyRow, UpstreamReply] | None:
        """The upstream said the prompt is too long for this hop's model: the (key, reply)
        whose error answers the client now, or None when the walk goes on (to a model with
        a larger window, or to the same model with the oldest turns pruned)."""
        hop, mode = self.hop, self.route.on_context_overflow
        if hop.fallback:  # the environment key is not pruned for
            return self._answer(hop.model, key, reply)
        if mode == FALLBACK:
            if self.overflow is None:
                self.overflow = (hop.model, key, reply)
            return None
        if mode != PRUNE:
            return self._answer(hop.model, key, reply)
        if hop.first is None:
            hop.first = (key, reply)
        if hop.rounds < MAX_PRUNE_ROUNDS:
            dropped = prune_request(self.request, reply.overflow, self.route.context_window)
            if dropped:
                hop.rounds += 1
                self.rec.context_pruned = (self.rec.context_pruned or 0) + dropped
                log.info(
                    "request %s: %d messages pruned for %s", self.rec.request_id, dropped, hop.model
                )
                self.again = True
                return None
        return self._answer(hop.model, *hop.first)  # the turns that must stay do not fit

    def end(self) -> tuple[KeyRow, UpstreamReply]:
        """How a walk that found no answer ends: the first overflow's error, to relay (no
        model had the room), or the last model's error, raised."""
        if self.overflow is not None:
            return self._answer(*self.overflow)
        if self.refusal is not None and self.last.code in _SAYS_LESS_THAN_A_REFUSAL:
            raise self.refusal
        raise self.last

    def _answer(self, model: str, key: KeyRow, reply: UpstreamReply):
        """An overflow's error goes to the client as the model's that said it."""
        self.rec.model, self.rec.context_pruned = model, None
        return key, reply


def prune_request(request: ProxyRequest, overflow: ContextOverflow, window: int | None) -> int:
    """Drop the request's oldest turns to fit (in place); messages dropped, 0 if none can.

    An OpenAI chat client's messages are pruned as they are. Another format's request is
    pruned as internal turns (what an adapter of another format encodes), and so is an
    Anthropic client's own body, which an Anthropic upstream is sent as it is; another
    client's own body (Responses) is dropped, so the pruned request is encoded for it."""
    if request.operation != "chat":
        return 0
    if request.typed is None:
        return _prune_chat(request, overflow, window)
    answer = request.answer_tokens
    counted = pruning.typed_tokens(request.typed)
    typed = pruning.prune_typed(request.typed, pruning.budget(counted, overflow, window, answer))
    if typed is None:
        return 0
    (pruned, dropped), native = typed, request.native
    if native is not None and native[0] == ANTHROPIC:
        body = native[1]
        counted = pruning.prompt_tokens(body.get("messages") or [], body.get("system"))
        kept = pruning.prune_anthropic(body, pruning.budget(counted, overflow, window, answer))
        if kept is None:
            return 0
        request.native, dropped = (ANTHROPIC, kept[0]), kept[1]  # the client's count
    else:
        request.native = None
    request.typed = pruned
    return dropped


def _prune_chat(request: ProxyRequest, overflow: ContextOverflow, window: int | None) -> int:
    """An OpenAI chat client's body with its oldest messages dropped."""
    messages = request.body.get("messages")
    if not isinstance(messages, list):
        return 0
    counted = pruning.prompt_tokens(messages)
    budget = pruning.budget(counted, overflow, window, request.answer_tokens)
    chat = pruning.prune_chat(messages, budget)
    if chat is None:
        return 0
    request.body = {**request.body, "messages": chat.messages}
    request.messages = chat.messages
    return chat.dropped


def wait_for_key(err: GatewayError, allowed: int | None, waited: float) -> float | None:
    """Seconds to wait before trying the profile's keys again, or None to fail now: only
    when the profile allows waiting and a key comes free within what is left of it."""
    if not allowed or err.code not in WAITABLE:
        return None
    retry_after = err.headers.get("Retry-After")
    if retry_after is None:
        return None
    pause = float(retry_after)
    return pause if waited + pause <= allowed else None

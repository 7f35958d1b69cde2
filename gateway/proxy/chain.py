"""Chain: the models a request may be served by (its route's target, then fallbacks,
F20/F25), the environment fallback key (F26), waiting for a key to come free (F32), and
what an upstream's "prompt too long" does (issue 12): the route's `on_context_overflow`
sends its error back, moves on to the next model of the chain, or prunes the oldest turns
and asks the same model again. One dispatch path serves every hop, streamed or not."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway import pruning
from gateway.accounting import RequestRecord
from gateway.dialects.base import ProxyRequest
from gateway.errors import GatewayError
from gateway.providers.base import ContextOverflow
from gateway.proxy.candidates import Candidates
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
}
# The pool had nothing to offer: where the environment fallback key steps in.
POOL_EMPTY = {"model_not_found", "no_available_keys", "provider_keys_at_limit"}
# Errors after which waiting can help: no key free now, but one will be (F32).
WAITABLE = {"no_available_keys", "provider_keys_at_limit", "upstream_rate_limited"}

# Prompts pruned and sent again per model, at most (each round drops at least one turn).
MAX_PRUNE_ROUNDS = 3
ANTHROPIC = "anthropic"

Dispatch = Callable[[str, list[KeyRow]], object]
log = logging.getLogger(__name__)


class ContextOverflowed(Exception):
    """An upstream said the prompt is too long for `model`; `answer()` relays its error."""

    def __init__(self, model: str, overflow: ContextOverflow, answer: Callable[[], object]):
        super().__init__(f"context overflow on {model}")
        self.model, self.overflow, self._answer = model, overflow, answer

    def answer(self, rec: RequestRecord):
        """The upstream's own error, to the client, as an error mode route gives it."""
        rec.model, rec.context_pruned = self.model, None
        return self._answer()


class Chain:
    """Walks a request's chain of models; `dispatch(model, keys)` serves one hop."""

    def __init__(
        self,
        routes: Routes,
        candidates: Candidates,
        clock,
        use_paid_models: bool,
        fallback: KeyRow | None,
    ) -> None:
        self.routes, self.candidates, self.clock = routes, candidates, clock
        self.use_paid_models, self.fallback = use_paid_models, fallback

    def serve(
        self,
        name: str,
        profile: ProfileRow,
        request: ProxyRequest,
        rec: RequestRecord,
        dispatch: Dispatch,
        route: RoutePolicy = NO_ROUTE,
    ):
        paid = profile.use_paid_models
        models = self.routes.table().chain(
            request.model, self.use_paid_models if paid is None else paid
        )
        waited = 0.0
        while True:
            try:
                return self._walk(name, profile, models, request, rec, dispatch, route)
            except GatewayError as err:
                pause = wait_for_key(err, profile.wait_for_key_seconds, waited)
                if pause is None:
                    raise
            waited += pause
            self.clock.sleep(pause)

    def _walk(self, name, profile, models, request, rec, dispatch, route: RoutePolicy):
        last: GatewayError | None = None
        overflowed: ContextOverflowed | None = None  # its error answers if nothing fits
        for model in models:
            rec.model = model
            try:
                keys = self.candidates(name, profile, model)
                if route.on_context_overflow == PRUNE:
                    return self._pruning(model, keys, request, rec, dispatch, route)
                return dispatch(model, keys)
            except ContextOverflowed as over:
                if route.on_context_overflow != FALLBACK:
                    return over.answer(rec)
                overflowed = overflowed or over  # on to a model with a larger window
            except GatewayError as err:
                if err.code not in NEXT_IN_CHAIN:
                    raise
                last = err
        if overflowed is not None:
            return overflowed.answer(rec)
        if self.fallback is not None and last.code in POOL_EMPTY:
            rec.model = models[0]
            try:
                return dispatch(models[0], [self.fallback])
            except ContextOverflowed as over:  # the environment key is not pruned for
                return over.answer(rec)
        raise last

    def _pruning(self, model, keys, request, rec, dispatch, route: RoutePolicy):
        """Serve one model, dropping the oldest turns after each overflow (a few rounds);
        the first overflow's error when the turns that must stay do not fit either."""
        first: ContextOverflowed | None = None
        for _ in range(MAX_PRUNE_ROUNDS + 1):
            try:
                return dispatch(model, keys)
            except ContextOverflowed as over:
                first = first or over
                dropped = prune_request(request, over.overflow, route.context_window)
                if not dropped:
                    raise first from None
                rec.context_pruned = (rec.context_pruned or 0) + dropped
                log.info("request %s: %d messages pruned for %s", rec.request_id, dropped, model)
        raise first


def prune_request(request: ProxyRequest, overflow: ContextOverflow, window: int | None) -> int:
    """Drop the request's oldest turns to fit (in place); messages dropped, 0 if none can.

    The gateway's chat body is pruned; so is an Anthropic client's own body, which an
    Anthropic upstream is sent as it is. Another client's own body (Responses) is dropped,
    so the pruned chat body is what goes up."""
    messages = request.body.get("messages")
    if request.operation != "chat" or not isinstance(messages, list):
        return 0
    answer = request.answer_tokens
    counted = pruning.prompt_tokens(messages)
    chat = pruning.prune_chat(messages, pruning.budget(counted, overflow, window, answer))
    if chat is None:
        return 0
    dropped = chat.dropped
    native = request.native
    if native is not None and native[0] == ANTHROPIC:
        body = native[1]
        counted = pruning.prompt_tokens(body.get("messages") or [], body.get("system"))
        pruned = pruning.prune_anthropic(body, pruning.budget(counted, overflow, window, answer))
        if pruned is None:
            return 0
        request.native, dropped = (ANTHROPIC, pruned[0]), pruned[1]  # the client's count
    else:
        request.native = None
    request.body = {**request.body, "messages": chat.messages}
    request.messages = chat.messages
    return dropped


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

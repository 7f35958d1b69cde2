"""Chain: the models a request may be served by (its route's target, then fallbacks,
F20/F25), the environment fallback key (F26), and waiting for a key to come free (F32).
One dispatch path serves every hop, streamed or not."""

from __future__ import annotations

from collections.abc import Callable

from gateway.accounting import RequestRecord
from gateway.dialects.base import ProxyRequest
from gateway.errors import GatewayError
from gateway.proxy.candidates import Candidates
from gateway.routes import Routes
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

Dispatch = Callable[[str, list[KeyRow]], object]


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
    ):
        paid = profile.use_paid_models
        models = self.routes.table().chain(
            request.model, self.use_paid_models if paid is None else paid
        )
        waited = 0.0
        while True:
            try:
                return self._walk(name, profile, models, rec, dispatch)
            except GatewayError as err:
                pause = wait_for_key(err, profile.wait_for_key_seconds, waited)
                if pause is None:
                    raise
            waited += pause
            self.clock.sleep(pause)

    def _walk(self, name, profile, models, rec, dispatch):
        last: GatewayError | None = None
        for model in models:
            rec.model = model
            try:
                return dispatch(model, self.candidates(name, profile, model))
            except GatewayError as err:
                if err.code not in NEXT_IN_CHAIN:
                    raise
                last = err
        if self.fallback is not None and last.code in POOL_EMPTY:
            rec.model = models[0]
            return dispatch(models[0], [self.fallback])
        raise last


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

"""The retry decision: what one failed attempt means for the key and for the request."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """How one upstream attempt ended."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    BAD_RESPONSE = "bad_response"
    CLIENT_ERROR = "client_error"
    # The prompt is longer than the model's context window (OpenAI's
    # `context_length_exceeded`, a 413, Anthropic's "prompt is too long"): the route's
    # `on_context_overflow` says what happens next (chain.py).
    CONTEXT_OVERFLOW = "context_overflow"
    # The upstream has no such model (404 model_not_found and its kin): this key does not
    # serve it; another key may.
    MODEL_NOT_FOUND = "model_not_found"


class KeyAction(StrEnum):
    """What happens to the provider key after the attempt."""

    SUCCEED = "succeed"  # reset consecutive failures, mark used
    COOL_DOWN = "cool_down"  # out of the pool until Retry-After (or the default) passes
    AUTH_FAILED = "auth_failed"  # out of the pool until re-validated
    COUNT_FAILURE = "count_failure"  # one more consecutive failure; disabled at the threshold
    NONE = "none"  # the request was at fault, not the key
    NOT_SERVED = "not_served"  # no blame: the key is just not asked for that model again


@dataclass(frozen=True)
class Decision:
    """The key's fate and whether the request moves on to the next key."""

    outcome: Outcome
    key_action: KeyAction
    fail_over: bool


def classify(
    status: int | None,
    transport_error: Outcome | None = None,
    overflow: bool = False,
    missing: bool = False,
) -> Outcome:
    """Name the outcome of an attempt from its HTTP status or transport failure; `overflow`:
    the adapter read the error as a context overflow (UpstreamReply.overflow); `missing`:
    as the upstream having no such model (UpstreamReply.model_missing)."""
    if transport_error is not None:
        return transport_error
    if status is None:
        return Outcome.CONNECTION_ERROR
    if 200 <= status < 300:
        return Outcome.OK
    if missing and status in (400, 404):
        return Outcome.MODEL_NOT_FOUND
    if overflow and 400 <= status < 500 and status not in (401, 403, 429):
        return Outcome.CONTEXT_OVERFLOW
    if status == 429:
        return Outcome.RATE_LIMITED
    if status in (401, 403):
        return Outcome.AUTH_FAILED
    if status == 408 or status >= 500:
        return Outcome.SERVER_ERROR
    return Outcome.CLIENT_ERROR


_DECISIONS = {
    Outcome.OK: Decision(Outcome.OK, KeyAction.SUCCEED, fail_over=False),
    Outcome.RATE_LIMITED: Decision(Outcome.RATE_LIMITED, KeyAction.COOL_DOWN, fail_over=True),
    Outcome.AUTH_FAILED: Decision(Outcome.AUTH_FAILED, KeyAction.AUTH_FAILED, fail_over=True),
    Outcome.SERVER_ERROR: Decision(Outcome.SERVER_ERROR, KeyAction.COUNT_FAILURE, fail_over=True),
    Outcome.TIMEOUT: Decision(Outcome.TIMEOUT, KeyAction.COUNT_FAILURE, fail_over=True),
    Outcome.CONNECTION_ERROR: Decision(
        Outcome.CONNECTION_ERROR, KeyAction.COUNT_FAILURE, fail_over=True
    ),
    Outcome.BAD_RESPONSE: Decision(Outcome.BAD_RESPONSE, KeyAction.COUNT_FAILURE, fail_over=True),
    # 400s are the request's fault: another key would say the same, so tell the client.
    Outcome.CLIENT_ERROR: Decision(Outcome.CLIENT_ERROR, KeyAction.NONE, fail_over=False),
    # Too long for the model, not the key's fault: another key of the same model would say
    # the same. The chain falls back to a larger model or prunes, as the route says.
    Outcome.CONTEXT_OVERFLOW: Decision(Outcome.CONTEXT_OVERFLOW, KeyAction.NONE, fail_over=False),
    # The key's upstream lacks the model: no fault of the key's or the request's; the next
    # key may have it.
    Outcome.MODEL_NOT_FOUND: Decision(
        Outcome.MODEL_NOT_FOUND, KeyAction.NOT_SERVED, fail_over=True
    ),
}


def decide(
    status: int | None,
    transport_error: Outcome | None = None,
    overflow: bool = False,
    missing: bool = False,
) -> Decision:
    """The decision for an attempt that ended with this status or transport failure."""
    return _DECISIONS[classify(status, transport_error, overflow, missing)]

"""The provider adapter interface: the gateway's request in, a normalized answer out.

An adapter speaks one upstream format. Whatever that format is, the proxy core reads only
the normalized fields of `UpstreamReply` (status, usage, the answer's text, the error
message, a stream reader) and never the provider's JSON. Where the client's dialect and
the upstream speak the same format, `body` and the stream's events are the upstream's own
bytes (passthrough); the adapter reads usage from them on the side.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from gateway.errors import GatewayError
from gateway.ledger.usage import Usage
from gateway.providers import carry
from gateway.providers.http import UpstreamClient
from gateway.providers.transport import Target, Timeouts, TransportError

__all__ = [
    "ContextOverflow",
    "Credits",
    "ProviderAdapter",
    "StreamReader",
    "Target",
    "Timeouts",
    "TransportError",
    "UpstreamReply",
    "context_overflow",
    "model_missing",
    "retry_after_seconds",
]


class StreamReader(Protocol):
    """Reads a 2xx stream as it passes: which events go on to the client, and its usage."""

    done: bool  # the upstream's end-of-stream event was seen

    def feed(self, data: bytes) -> list[bytes]:
        """Complete events (each with its blank line) that should go to the client."""

    def read_usage(self) -> Usage | None:
        """The usage the upstream reported, if it did."""

    def completion_text(self) -> str:
        """The answer's text sent so far, for counting tokens of an unfinished stream."""

    def billable_text(self) -> str:
        """Every output the upstream bills, sent so far and in order: the answer's text,
        tool-call names and arguments, reasoning. It only ever grows at its end (a meter
        counts only what was added since it last looked)."""


@dataclass(frozen=True)
class ContextOverflow:
    """An upstream's "the prompt is too long", with what it said of the sizes (None: it
    did not say): its context window, the prompt's tokens, the answer's tokens asked."""

    limit: int | None = None
    used: int | None = None
    answer: int | None = None


# What upstreams say when a prompt does not fit (OpenAI, vLLM, LiteLLM, Anthropic, Groq…).
_OVERFLOW_TEXT = re.compile(
    r"maximum context length|context_length_exceeded|context length exceeded|"
    r"context window|prompt is too long|exceed context limit|"
    r"exceeds the maximum number of tokens allowed",
    re.IGNORECASE,
)
_LIMIT = re.compile(r"maximum context length is (\d+)|> (\d+) maximum|tokens allowed \((\d+)\)")
_USED = re.compile(
    r"resulted in (\d+) tokens|\((\d+) in the messages|too long: (\d+) tokens|"
    r"input token count \((\d+)\)"  # Gemini
)
_ANSWER = re.compile(r"(\d+) in the completion|: \d+ \+ (\d+) >")
_SUM = re.compile(r": (\d+) \+ (\d+) > (\d+)")  # Anthropic: input + max_tokens > limit


def _number(pattern: re.Pattern, text: str) -> int | None:
    found = pattern.search(text)
    return next((int(g) for g in found.groups() if g), None) if found else None


def context_overflow(status: int, code: object, message: object) -> ContextOverflow | None:
    """Whether an error answer means the prompt is too long for the model (and the sizes
    its message gives); None for any other error. Adapters call it on their error's code
    and message, so the core never reads a provider's JSON."""
    if status in (401, 403, 429) or not 400 <= status < 500:
        return None
    text = message if isinstance(message, str) else ""
    if code == "rate_limit_exceeded":  # Groq answers a tokens-per-minute limit with 413
        return None
    if status != 413 and code != "context_length_exceeded" and not _OVERFLOW_TEXT.search(text):
        return None
    summed = _SUM.search(text)
    if summed:
        used, answer, limit = (int(g) for g in summed.groups())
        return ContextOverflow(limit, used, answer)
    return ContextOverflow(_number(_LIMIT, text), _number(_USED, text), _number(_ANSWER, text))


# Gemini: "models/gpt-4o is not found for API version v1beta…"; OpenAI: "The model `x`
# does not exist"; Anthropic: "model: claude-x".
_MISSING_TEXT = re.compile(
    r"models/\S+ is not found|model [`'\"]?\S+[`'\"]? does not exist|^model: \S+$", re.I
)


def model_missing(status: int, code: object, message: object) -> bool:
    """Whether an error answer means the upstream has no such model (OpenAI's 404
    `model_not_found`, Gemini's 404 "models/X is not found", Anthropic's 404
    `not_found_error` about a model): the key does not serve it, the request is no fault
    of the key's. Adapters call it on their error's code and message."""
    if status not in (400, 404):
        return False
    if code == "model_not_found":
        return True
    text = message if isinstance(message, str) else ""
    return status == 404 and bool(_MISSING_TEXT.search(text.strip()))


@dataclass
class UpstreamReply:
    """An upstream answer, normalized by its adapter.

    On 2xx without streaming: `body` is what the client gets, `usage` what the upstream
    reported (None if it did not), `text` the answer's text (to estimate usage). On 2xx
    streaming: `chunks` yields raw bytes and `stream` reads them. Otherwise: `body` is the
    upstream's error body as it came, and `error` its message.
    """

    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: Iterator[bytes] | None = None
    _release: object = None
    usage: Usage | None = None
    text: str = ""
    error: str | None = None
    stream: StreamReader | None = None
    model: str | None = None
    # The wire format of `body` and of the stream's events: a client dialect of the same
    # format relays them as they are. `error_shaped`: an error body in that format's shape.
    format: str = "openai"
    error_shaped: bool = False
    # Filled by the gateway: the first stream bytes (read before the answer is committed).
    first_chunk: bytes = b""
    # Set by the adapter when its error says the prompt is too long (context_overflow()).
    overflow: ContextOverflow | None = None
    # Set by the adapter when its error says the upstream has no such model (model_missing()).
    model_missing: bool = False
    # The answer in the gateway's internal language (gateway/codecs/reply.py), when the
    # adapter decoded it (`format` "internal"; `body` then keeps the upstream's own bytes).
    reply: object = None

    def close(self) -> None:
        """Give the connection back (or drop it, for an unfinished stream)."""
        if self._release is not None:
            self._release()
            self._release = None


@dataclass(frozen=True)
class Credits:
    """What a provider says is left on an account (usage sync): tokens, or micro-dollars."""

    remaining_tokens: int | None = None
    remaining_credit_micros: int | None = None


def retry_after_seconds(headers: dict[str, str], now: datetime) -> float | None:
    """Seconds the upstream asked us to wait (`retry-after-ms`, `Retry-After` secs or date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


def unsupported(provider: str, what: str) -> GatewayError:
    """A whole operation this kind does not serve (another key's kind may)."""
    return carry.Unsupported(
        f"Provider '{provider}' does not serve {what}; route this model to a provider that does."
    )


class ProviderAdapter(ABC):
    """One upstream API kind. Adding a provider is one module and one registry line."""

    name: str = ""
    default_base_url: str = ""
    price_provider: str = ""  # its id in the price table
    url_schemes: tuple[str, ...] = ("http", "https")  # what its keys' base_url may be
    owned_by: str = ""  # the models' `owned_by` in /v1/models (empty: the kind's name)
    # The models a key of this kind serves when the admin declared none and its test
    # discovered none (gateway/keys/catalog.py; empty: none known, ("*",): any model), and
    # what it may use a day when the admin says nothing (None: no limit).
    default_models: tuple[str, ...] = ()
    default_daily_token_limit: int | None = None
    # Whether the provider reports what is left on an account (`check_credits`).
    reports_credits: bool = False
    # The provider's own words for a client-facing error, where it has them: keys
    # "auth_failed" (the upstream refused every key), "limit_reached" (every key at its
    # daily limit), "no_keys" (no usable key of this kind).
    wording: dict[str, str] = {}
    # How this kind treats each request field not every format has (carry.FIELDS):
    # carried, emulated, ignored or refused (a 400 naming the field, before any call).
    carries: dict[str, str] = carry.ALL_CARRIED
    # The media types a file part may have where file parts are carried (empty: any).
    file_types: tuple[str, ...] = ()
    # The client's headers (lower-case) this kind's upstream honours, sent on as they came.
    forwarded_headers: tuple[str, ...] = ()
    # Whether chat/chat_stream take `typed=`: the internal request (gateway/codecs) of a
    # client of another format than OpenAI chat, the only form that request has (its
    # `body` is then only the hop's model).
    takes_typed: bool = False

    def __init__(self, http: UpstreamClient) -> None:
        self.http = http

    def forwarded(self, target: Target) -> dict[str, str]:
        """The client's headers this upstream honours (never its credentials)."""
        given = target.client_headers
        return {name: given[name] for name in self.forwarded_headers if name in given}

    @classmethod
    def options_schema(cls) -> dict:
        """The options check_options accepts, as an OpenAPI schema: none here."""
        return {"type": "object", "properties": {}, "additionalProperties": False}

    @classmethod
    def check_options(cls, options: dict) -> dict:
        """The key's provider settings (ProviderKey.options) as stored; raise
        ValueError(field, message) for a bad one. This kind takes none."""
        if options:
            field = sorted(options)[0]
            raise ValueError(
                f"options.{field}", f"Provider '{cls.name}' takes no option '{field}'."
            )
        return {}

    @classmethod
    def max_concurrency(cls, options: dict) -> int | None:
        """How many requests a key of this kind serves at once (None: no cap)."""
        return None

    @abstractmethod
    def chat(self, target: Target, body: dict, timeouts: Timeouts, native=None) -> UpstreamReply:
        """A chat completion, not streamed (`body`: an OpenAI chat client's own body, or
        only the model of a request of another format, given typed to an adapter that
        `takes_typed`). `native`: (format, body) as the client sent it, for an adapter of
        that format to send as it is (passthrough)."""

    @abstractmethod
    def chat_stream(
        self, target: Target, body: dict, timeouts: Timeouts, wants_usage: bool, native=None
    ) -> UpstreamReply:
        """A streamed chat completion. `wants_usage`: the client asked to see the usage
        (the adapter asks the upstream for it anyway, to book the request)."""

    def passes_through(self, target: Target, native) -> bool:
        """Whether this key sends the client's own body (`native`) as it is."""
        return False

    def refuse_uncarried(self, body: dict) -> None:
        """Raise carry.Unsupported (a 400 naming the field) for a field of the chat body
        this kind cannot carry; called before the upstream is, on a translated body."""
        carry.check(self.name, self.carries, body, self.file_types)

    def refuse_uncarried_typed(self, request) -> None:
        """The same for the internal request: the refusal names the client's own field."""
        carry.check_typed(self.name, self.carries, request, self.file_types)

    def embeddings(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        """Embeddings (`body`: OpenAI's embeddings request)."""
        raise unsupported(self.name, "embeddings")

    def completions(
        self, target: Target, body: dict, timeouts: Timeouts, stream: bool, wants_usage: bool
    ) -> UpstreamReply:
        """A legacy text completion (`body`: OpenAI's completions request)."""
        raise unsupported(self.name, "text completions")

    def stored_response(
        self, target: Target, response_id: str, timeouts: Timeouts, method: str = "GET"
    ) -> UpstreamReply:
        """A response the upstream keeps (Responses API), read (GET) or deleted (DELETE)."""
        raise unsupported(self.name, "stored responses")

    def check_credits(self, target: Target, timeouts: Timeouts) -> Credits | UpstreamReply:
        """What the provider says is left on the key's account, or its error reply (a
        non-2xx UpstreamReply). Only kinds with `reports_credits` are asked."""
        raise unsupported(self.name, "a credits check")

    @abstractmethod
    def list_models(self, target: Target, timeouts: Timeouts) -> UpstreamReply:
        """The upstream's model list (the key test's cheap call); `models` in `text`-less
        form: the reply's `body` parsed by `model_ids`."""

    @abstractmethod
    def model_ids(self, reply: UpstreamReply) -> list[str] | None:
        """The model ids of a 2xx model list, or None if it cannot be read."""

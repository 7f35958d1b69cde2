"""What a dialect hands the proxy, and what it must render."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import msgspec

from gateway import tokens
from gateway.codecs.anthropic.request import fit_thinking
from gateway.codecs.request import Request
from gateway.errors import GatewayError
from gateway.providers.base import UpstreamReply

# The answer-length fields of an OpenAI-format body, and of each other native format.
ANSWER_FIELDS = ("max_completion_tokens", "max_tokens")
NATIVE_ANSWER_FIELDS = {"anthropic": "max_tokens", "openai_responses": "max_output_tokens"}


@dataclass
class ProxyRequest:
    """One client request in the gateway's terms, whatever dialect it came in.

    A chat request of another format than OpenAI's is `typed` (the internal request, the
    only form the gateway reads it in) and its client's own body (`native`); `body` is then
    only its model. An OpenAI-format client's `body` is its own (chat, embeddings or
    completions), sent as it is to an OpenAI-format upstream and decoded only by an adapter
    that reads nothing else (a CLI's). `model` is the model the client asked for (a
    route may send another upstream).
    """

    endpoint: str
    model: str
    stream: bool
    body: dict
    # What the upstream is asked for: "chat", "embeddings" or "completions".
    operation: str = "chat"
    # The client asked to see usage in its stream.
    wants_usage: bool = False
    # For budget estimates: the answer length the client allows (None: not set) and how
    # many answers (OpenAI's `n`).
    answer_tokens: int | None = None
    choices: int = 1
    # For counting tokens locally when the upstream reports none: an OpenAI chat client's
    # messages (a typed request is counted from its turns), and tokens already counted
    # (inputs given as token ids).
    messages: list = field(default_factory=list)
    prompt_tokens: int = 0
    # Whether the upstream writes an answer (embeddings do not): budgets reserve for it.
    answers: bool = True
    # What the dialect keeps between parsing and rendering (e.g. a response id).
    extra: dict = field(default_factory=dict)
    # (format, body) as the client sent it: an adapter of that format sends it as it is.
    native: tuple[str, dict] | None = None
    # The client's headers KeyRelay reads (gateway/proxy/client_headers.py), lower-case.
    headers: dict[str, str] = field(default_factory=dict)
    # The request in the gateway's internal language (gateway/codecs/request.py), decoded
    # from the client's body by its format's codec: what an adapter of another format
    # encodes. None for an OpenAI chat client (its body is read as it is).
    typed: Request | None = None
    # The client's wire format (its dialect's): an upstream answering in another one has
    # its answer decoded once, into the internal reply or events, on its way back.
    format: str = "openai"

    # The bodies `for_model` handed out for other models (an answer cap reaches them too).
    _copies: list = field(default_factory=list, repr=False)

    def for_model(self, model: str) -> dict:
        """The body to send when the route serves this request with `model`."""
        if model == self.body.get("model"):
            return self.body
        copy = {**self.body, "model": model}
        self._copies.append(copy)
        return copy

    def typed_for(self, body: dict) -> Request | None:
        """The internal request for this hop (`body`: what `for_model` gave) with its
        model; None for an OpenAI chat client (adapters read its body)."""
        if self.typed is None:
            return None
        return msgspec.structs.replace(self.typed, model=body["model"])

    def count_prompt(self) -> int:
        """The prompt's tokens, counted locally."""
        if self.typed is None:
            return tokens.count_prompt(self.messages)
        return tokens.count_request(self.typed)

    def quick_prompt_estimate(self) -> int:
        """The prompt's tokens guessed from its length (tokens.quick_prompt_estimate)."""
        if self.typed is None:
            return tokens.quick_prompt_estimate(self.messages)
        return tokens.quick_request_estimate(self.typed)

    def limit_answer(self, most: int) -> None:
        """Ask the upstream for at most `most` answer tokens (per choice): lower the
        client's own limit, or set one when it gave none, in every body that may be sent
        (an OpenAI-format client's, or the internal request and the client's own body, in
        its dialect's field)."""
        if not self.answers or (self.answer_tokens is not None and self.answer_tokens <= most):
            return
        self.answer_tokens = most
        if self.typed is not None:
            self.typed = msgspec.structs.replace(self.typed, max_tokens=most)
        else:
            for body in (self.body, *self._copies):
                fields = [name for name in ANSWER_FIELDS if name in body]
                if not fields:  # chat's current field; a legacy completion knows only max_tokens
                    fields = ["max_tokens" if self.operation == "completions" else ANSWER_FIELDS[0]]
                for name in fields:
                    body[name] = most
        if self.native is not None:
            name = NATIVE_ANSWER_FIELDS.get(self.native[0])
            if name is not None:
                self.native[1][name] = most
            if self.native[0] == "anthropic":  # its thinking must stay below max_tokens
                fit_thinking(self.native[1])


class Dialect(ABC):
    """One client-facing format."""

    name: str = ""
    endpoint: str = ""
    format: str = "openai"  # the wire format it speaks: an upstream's in it is relayed

    @abstractmethod
    def parse(self, body: object) -> ProxyRequest:
        """Validate the client's body (400 naming the field) and read it."""

    def prepare(self, request: ProxyRequest, client_key_id: int | None) -> None:
        """Complete the request with what only the caller's identity gives (an earlier
        conversation); nothing by default."""
        return None

    @abstractmethod
    def render(self, reply: UpstreamReply, request: ProxyRequest | None = None) -> bytes:
        """A whole answer (2xx) or an upstream's error, as the client's format wants it."""

    def stream_translator(self, request: ProxyRequest):
        """What encodes the internal stream events (gateway/codecs/events.py) as this
        dialect's SSE events: `feed(events) -> list[bytes]` (a stream of a wire format
        is decoded in front of it, gateway/codecs/wire.py)."""
        return None

    @abstractmethod
    def stream_error(self, message: str, code: str, request=None, progress=None) -> bytes:
        """The event that tells a streaming client its stream broke (`progress`: the
        stream's translator, or its reader when relayed as it is)."""

    def error_body(self, error: GatewayError) -> dict:
        """The gateway's own error, in the client's format."""
        return error.body()


def sse_data(event: bytes) -> bytes | None:
    """The payload of an SSE event's `data:` lines, or None."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"".join(lines) if lines else None

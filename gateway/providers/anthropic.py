"""The `anthropic` provider: Anthropic's native Messages API (`x-api-key`,
`anthropic-version`).

Another format's request is encoded from the internal language (gateway/codecs: the
client's own request, decoded once) by the Messages codec, which emulates what Messages
has no field for, and the answer decoded once into the internal language (a typed reply,
or stream events) that every client dialect renders. A client that speaks Anthropic
Messages itself gets passthrough: its own body goes up (with the routed model) and the
upstream's bytes come back, usage read on the side. Prompt caching usage
(`cache_creation_input_tokens`, `cache_read_input_tokens`) is booked and priced;
529 `overloaded_error` fails over like a 5xx.
"""

from __future__ import annotations

import orjson

from gateway.codecs.anthropic import request as anthropic_request
from gateway.codecs.anthropic.reply import decode
from gateway.codecs.anthropic.stream import Decoder
from gateway.codecs.openai_chat import reply as chat_codec
from gateway.codecs.openai_chat import request as openai_chat_request
from gateway.codecs.openai_chat.stream import Encoder as ChatEncoder
from gateway.codecs.request import Request
from gateway.codecs.wire import INTERNAL, Encoded
from gateway.ledger.usage import Usage
from gateway.policy import Outcome
from gateway.providers.base import (
    ProviderAdapter,
    Target,
    Timeouts,
    TransportError,
    UpstreamReply,
    context_overflow,
    model_missing,
)
from gateway.providers.carry import (
    ANSWER_TOOL,
    CARRIED,
    EMULATED,
    IGNORED,
    FunctionCallStream,
    as_function_call,
    legacy_functions,
)

VERSION = "2023-06-01"
FORMAT = "anthropic"
# What a document block takes as base64 data (a file part's types).
DOCUMENT_TYPES = ("application/pdf", "text/plain")


class AnthropicAdapter(ProviderAdapter):
    name = "anthropic"
    default_base_url = "https://api.anthropic.com/v1"
    price_provider = "anthropic"
    takes_typed = True
    # Messages has no several choices, log probabilities, seed, penalties or biases, and
    # takes no audio; structured output is a forced tool whose input is the answer.
    carries = {
        "response_format: json_object": EMULATED,
        "response_format: json_schema": EMULATED,
        "tools": CARRIED,
        "tool_choice: allowed_tools": EMULATED,
        "parallel_tool_calls: false": CARRIED,
        "functions": EMULATED,
        "function_call": EMULATED,
        "content part: image_url": CARRIED,
        "content part: file": CARRIED,
        "temperature, top_p, stop": CARRIED,
        "top_k": CARRIED,
        "reasoning_effort": CARRIED,
        "user": CARRIED,
        "prompt_cache_key": IGNORED,
        "cache_control": CARRIED,
        "store, metadata, service_tier, safety_identifier": IGNORED,
    }
    file_types = DOCUMENT_TYPES
    # Beta features the client turns on (its `anthropic-version` is not sent on: this
    # adapter reads and writes the version it was written for).
    forwarded_headers = ("anthropic-beta",)

    def _headers(self, target: Target) -> dict[str, str]:
        return {
            **self.forwarded(target),
            "x-api-key": target.secret,
            "anthropic-version": VERSION,
            "Content-Type": "application/json",
        }

    def passes_through(self, target: Target, native) -> bool:
        return native is not None and native[0] == FORMAT

    def _payload(self, body: dict, native, typed: Request | None) -> tuple[dict, bool]:
        """(the Messages request, whether the client's own Anthropic body is sent): the
        client's own body, else encoded from the internal request (the client's own
        format's, else the chat body's); a field Messages cannot carry refused first."""
        if native is not None and native[0] == FORMAT:
            return {**native[1], "model": body["model"]}, True
        if typed is None:
            self.refuse_uncarried(body)
            typed = openai_chat_request.decode(body)
        else:
            self.refuse_uncarried_typed(typed)
        return anthropic_request.encode(typed), False

    def chat(
        self, target: Target, body: dict, timeouts: Timeouts, native=None, typed=None
    ) -> UpstreamReply:
        payload, passthrough = self._payload(body, native, typed)
        payload.pop("stream", None)
        response = self.http.request(
            "POST", f"{target.base_url}/messages", self._headers(target), timeouts,
            orjson.dumps(payload),
        )  # fmt: skip
        raw = response.read()
        if response.status >= 300:
            return error_reply(response.status, response.headers, raw)
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            raise TransportError(Outcome.BAD_RESPONSE, "upstream answered 2xx without JSON")
        usage = usage_of(message.get("usage"))
        text = "".join(
            block.get("text", "")
            for block in message.get("content") or ()
            if isinstance(block, dict) and block.get("type") == "text"
        )
        if passthrough:
            return UpstreamReply(
                response.status, response.headers, raw, usage=usage, text=text,
                model=message.get("model"), format=FORMAT,
            )  # fmt: skip
        internal = decode(message, ANSWER_TOOL if _answers(payload) else None)
        reply = UpstreamReply(
            response.status, response.headers, raw, usage=usage, text=text,
            model=message.get("model"), format=INTERNAL, reply=internal,
        )  # fmt: skip
        if legacy_functions(body):  # a client of legacy functions: OpenAI chat's own shape
            reply.body = orjson.dumps(as_function_call(chat_codec.encode(internal)))
            reply.format, reply.reply = "openai", None
        return reply

    def chat_stream(
        self,
        target: Target,
        body: dict,
        timeouts: Timeouts,
        wants_usage: bool,
        native=None,
        typed=None,
    ) -> UpstreamReply:
        payload, passthrough = self._payload(body, native, typed)
        payload["stream"] = True
        response = self.http.request(
            "POST", f"{target.base_url}/messages", self._headers(target), timeouts,
            orjson.dumps(payload),
        )  # fmt: skip
        if response.status >= 300:
            return error_reply(response.status, response.headers, response.read())
        reader = MessagesStream(passthrough, _answers(payload))
        stream_format = FORMAT if passthrough else INTERNAL
        if legacy_functions(body):  # a client of legacy functions: OpenAI chat's own chunks
            reader = FunctionCallStream(Encoded(reader, ChatEncoder(body["model"], wants_usage)))
            stream_format = "openai"
        return UpstreamReply(
            response.status,
            response.headers,
            chunks=response.chunks(),
            _release=response.abandon,
            stream=reader,
            format=stream_format,
        )

    def list_models(self, target: Target, timeouts: Timeouts) -> UpstreamReply:
        response = self.http.request(
            "GET", f"{target.base_url}/models?limit=1000", self._headers(target), timeouts
        )
        raw = response.read()
        if response.status >= 300:
            return error_reply(response.status, response.headers, raw)
        return UpstreamReply(response.status, response.headers, raw, format=FORMAT)

    def model_ids(self, reply: UpstreamReply) -> list[str] | None:
        try:
            data = orjson.loads(reply.body).get("data")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        if not isinstance(data, list):
            return None
        return sorted(
            {m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)}
        )


def _answers(payload: dict) -> bool:
    """Whether the request asks for its answer through the structured-output tool."""
    return any(t.get("name") == ANSWER_TOOL for t in payload.get("tools") or ())


def usage_of(usage: object) -> Usage | None:
    """A Messages `usage` as the gateway's: input counts every prompt token, cached or not
    (as OpenAI's prompt_tokens does), with the cache writes and reads beside it."""
    if not isinstance(usage, dict):
        return None
    plain = usage.get("input_tokens")
    output = usage.get("output_tokens")
    if not isinstance(plain, int) or not isinstance(output, int):
        return None
    write = usage.get("cache_creation_input_tokens") or 0
    read = usage.get("cache_read_input_tokens") or 0
    write = write if isinstance(write, int) else 0
    read = read if isinstance(read, int) else 0
    return Usage(plain + write + read, output, cache_write=write, cache_read=read)


def error_reply(status: int, headers: dict[str, str], body: bytes) -> UpstreamReply:
    """An error: the body as it came (Anthropic's shape), and its message."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        message = body[:500].decode("utf-8", "replace") or f"upstream answered {status}"
    return UpstreamReply(
        status,
        headers,
        body,
        error=message,
        error_shaped=isinstance(parsed, dict) and parsed.get("type") == "error",
        format=FORMAT,
        overflow=context_overflow(
            status, error.get("type") if isinstance(error, dict) else None, message
        ),
        model_missing=status == 404
        and isinstance(error, dict)
        and error.get("type") == "not_found_error"
        and model_missing(status, None, message),
    )


# -- Messages → OpenAI chat ---------------------------------------------------------------


def openai_usage(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read},
    }


class MessagesStream:
    """Reads a Messages SSE stream: relays its events as they are (passthrough), or decodes
    them into the internal stream events; either way reads usage and the end
    (`message_stop`)."""

    def __init__(self, passthrough: bool, answer_tool: bool = False) -> None:
        self.passthrough = passthrough
        self.decoder = Decoder(ANSWER_TOOL if answer_tool else None)
        self.done = False
        self._buffer = b""
        self._start: dict = {}
        self._output = 0
        self._text: list[str] = []
        self._billed: list[str] = []  # the text, thinking and tool calls, in order
        self.open_block: int | None = None  # the content block started and not stopped

    def feed(self, data: bytes) -> list:
        self._buffer += data
        if b"\r" in data:
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        out: list = []
        while (end := self._buffer.find(b"\n\n")) != -1:
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            out += self._event(event)
        return out

    def _event(self, event: bytes) -> list:
        payload = None
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                try:
                    payload = orjson.loads(line[5:].strip())
                except orjson.JSONDecodeError:
                    payload = None
        if not isinstance(payload, dict):
            return [event + b"\n\n"] if self.passthrough else []
        kind = payload.get("type")
        if kind == "message_start":
            message = payload.get("message") or {}
            self._start = message.get("usage") or {}
        elif kind == "message_delta":
            output = (payload.get("usage") or {}).get("output_tokens")
            if isinstance(output, int):
                self._output = output
        elif kind == "content_block_delta":
            self._read_delta(payload.get("delta"), payload.get("index") == self.decoder.answer)
        elif kind == "content_block_start":  # a stream cut at the length closes it
            self.open_block = payload.get("index", 0)
            block = payload.get("content_block")
            if isinstance(block, dict) and isinstance(block.get("name"), str):
                self._billed.append(block["name"])  # a tool call's name
        elif kind == "content_block_stop":
            self.open_block = None
        elif kind == "message_stop":
            self.done = True
        if self.passthrough:
            return [event + b"\n\n"]
        if kind == "error":
            error = payload.get("error") or {}
            raise TransportError(
                Outcome.SERVER_ERROR, f"upstream stream error: {error.get('message', '')}"
            )
        return self.decoder.payload(payload)

    def _read_delta(self, delta: object, answer: bool) -> None:
        """Keep the billed output a block delta carries: text, thinking, tool input (the
        structured-output tool's input is the answer's text)."""
        if not isinstance(delta, dict):
            return
        for field in ("text", "thinking", "partial_json"):
            piece = delta.get(field)
            if isinstance(piece, str):
                self._billed.append(piece)
                if field == "text" or answer:
                    self._text.append(piece)

    def read_usage(self) -> Usage | None:
        if not self._start:
            return None
        return usage_of({**self._start, "output_tokens": self._output})

    def completion_text(self) -> str:
        return "".join(self._text)

    def billable_text(self) -> str:
        return "".join(self._billed)

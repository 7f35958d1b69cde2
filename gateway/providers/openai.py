"""The `openai` provider: any OpenAI-compatible API at a configurable base URL.

The gateway's own request format is OpenAI chat, so nothing is translated: the body goes
up as it is (streams ask for `include_usage`, to book them), and the answer comes back as
the upstream's bytes, read on the side for usage, its text and its error message.
A key with the Responses API gets a Responses client's body as it is, and a chat or
Messages client's request for a model only that API serves, encoded as a Responses one
(its answer decoded into the client's format by codecs/wire.py).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from urllib.parse import quote

import msgspec
import orjson

from gateway.codecs.openai_chat import request as chat_request
from gateway.codecs.openai_responses import request as responses_request
from gateway.codecs.request import Reasoning, Request, ToolChoice
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
from gateway.providers.carry import BY_NAME, TYPED, legacy_functions, refused
from gateway.providers.openai_sse import SSEFilter, cached_of, strip_cost, usage_of


class OpenAIAdapter(ProviderAdapter):
    """Talks the OpenAI wire protocol as is."""

    name = "openai"
    default_base_url = "https://api.openai.com/v1"
    price_provider = "openai"
    # Another format's client (Anthropic, Responses) is sent the chat body encoded from
    # its internal request; an OpenAI chat client's body goes up as it is.
    takes_typed = True
    # Beta features the client opts into; `OpenAI-Organization` / `-Project` are not sent
    # on: they belong to the key's account, not to the client.
    forwarded_headers = ("openai-beta",)

    def __init__(self, http) -> None:
        super().__init__(http)
        # A chat or Messages client's request for a model only the Responses API serves
        # goes there on a key with `responses_api`: the models its upstream said so of.
        self.learned = ResponsesOnly()

    def _headers(self, target: Target) -> dict[str, str]:
        return {
            **self.forwarded(target),
            "Authorization": f"Bearer {target.secret}",
            "Content-Type": "application/json",
        }

    def _post(self, target: Target, path: str, body: dict, timeouts: Timeouts):
        return self.http.request(
            "POST", f"{target.base_url}{path}", self._headers(target), timeouts, orjson.dumps(body)
        )

    def passes_through(self, target: Target, native) -> bool:
        """A Responses client on a key whose upstream has the Responses API."""
        return native is not None and native[0] == RESPONSES and target.responses_api

    def chat(
        self, target: Target, body: dict, timeouts: Timeouts, native=None, typed=None
    ) -> UpstreamReply:
        if self.passes_through(target, native):
            return self._responses(target, {**native[1], "model": body["model"]}, timeouts)
        if self.responses_only(target, body["model"]):
            return self.via_responses(target, body, typed, timeouts, stream=False)
        reply = self._whole(target, "/chat/completions", chat_body(body, typed), timeouts)
        if self.learned_responses_only(target, body["model"], reply):
            return self.via_responses(target, body, typed, timeouts, stream=False)
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
        if self.passes_through(target, native):
            sent = {**native[1], "model": body["model"], "stream": True}
            return self._responses_stream(target, sent, timeouts)
        if self.responses_only(target, body["model"]):
            return self.via_responses(target, body, typed, timeouts, stream=True)
        sent = chat_body(body, typed)
        reply = self._streamed(target, "/chat/completions", sent, timeouts, wants_usage)
        if self.learned_responses_only(target, body["model"], reply):
            return self.via_responses(target, body, typed, timeouts, stream=True)
        return reply

    def _responses_stream(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        """The Responses API's stream as it is: the upstream's events relayed."""
        response = self._post(target, "/responses", body, timeouts)
        if response.status >= 300:
            return error_reply(response.status, response.headers, response.read())
        return UpstreamReply(
            response.status,
            response.headers,
            chunks=response.chunks(),
            _release=response.abandon,
            stream=ResponsesEvents(),
            format=RESPONSES,
        )

    # -- a chat or Messages client served through the Responses API ------------------------

    def responses_only(self, target: Target, model: str) -> bool:
        """Whether this key's upstream serves the model through the Responses API only:
        a model on the list (RESPONSES_ONLY), or one its upstream said so of before."""
        if not target.responses_api:
            return False
        return (
            RESPONSES_ONLY.match(bare(model)) is not None or (target.key_id, model) in self.learned
        )

    def learned_responses_only(self, target: Target, model: str, reply: UpstreamReply) -> bool:
        """Whether chat completions were refused as "only supported in v1/responses" by a
        key with the Responses API (remembered: later calls go there at once)."""
        if not target.responses_api or reply.status not in (400, 404):
            return False
        if ONLY_RESPONSES_ERROR not in reply.body:
            return False
        self.learned.add((target.key_id, model))
        reply.close()
        return True

    def via_responses(
        self, target: Target, body: dict, typed: Request | None, timeouts: Timeouts, stream: bool
    ) -> UpstreamReply:
        """The chat request encoded as a Responses one; the answer (whole or streamed) in
        the Responses format, which the client's dialect decodes (codecs/wire.py)."""
        sent = responses_body(self.name, body, typed, stream)
        if stream:
            return self._responses_stream(target, sent, timeouts)
        return self._responses(target, sent, timeouts)

    def _responses(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        """The Responses API as it is: the upstream's response object relayed."""
        response = self._post(target, "/responses", body, timeouts)
        raw = response.read()
        if response.status >= 300:
            reply = error_reply(response.status, response.headers, raw)
            reply.format = RESPONSES
            return reply
        parsed = json_object(raw)
        if parsed is None:
            raise TransportError(Outcome.BAD_RESPONSE, "upstream answered 2xx without JSON")
        return UpstreamReply(
            response.status,
            response.headers,
            raw,
            usage=responses_usage(parsed.get("usage")),
            text=responses_text(parsed),
            format=RESPONSES,
        )

    def stored_response(
        self, target: Target, response_id: str, timeouts: Timeouts, method: str = "GET"
    ) -> UpstreamReply:
        url = f"{target.base_url}/responses/{quote(response_id, safe='')}"
        response = self.http.request(method, url, self._headers(target), timeouts)
        raw = response.read()
        if response.status >= 300:
            reply = error_reply(response.status, response.headers, raw)
        else:
            reply = UpstreamReply(response.status, response.headers, raw)
        reply.format = RESPONSES
        return reply

    def embeddings(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        return self._whole(target, "/embeddings", body, timeouts)

    def completions(
        self, target: Target, body: dict, timeouts: Timeouts, stream: bool, wants_usage: bool
    ) -> UpstreamReply:
        if stream:
            return self._streamed(target, "/completions", body, timeouts, wants_usage)
        return self._whole(target, "/completions", body, timeouts)

    def _whole(self, target: Target, path: str, body: dict, timeouts: Timeouts) -> UpstreamReply:
        response = self._post(target, path, body, timeouts)
        reply = completion_reply(response.status, response.headers, response.read())
        if reply.status < 300 and reply.error is not None:  # unreadable: the next key
            raise TransportError(Outcome.BAD_RESPONSE, reply.error)
        return reply

    def _streamed(
        self, target: Target, path: str, body: dict, timeouts: Timeouts, wants_usage: bool
    ) -> UpstreamReply:
        asked = body.get("stream_options") or {}
        sent = {**body, "stream_options": {**asked, "include_usage": True}}
        response = self._post(target, path, sent, timeouts)
        if response.status >= 300:
            return error_reply(response.status, response.headers, response.read())
        return UpstreamReply(
            response.status,
            response.headers,
            chunks=response.chunks(),
            _release=response.abandon,
            stream=SSEFilter(hide_usage_chunk=not wants_usage),
        )

    def list_models(self, target: Target, timeouts: Timeouts) -> UpstreamReply:
        response = self.http.request(
            "GET", f"{target.base_url}/models", self._headers(target), timeouts
        )
        body = response.read()
        if response.status >= 300:
            return error_reply(response.status, response.headers, body)
        return UpstreamReply(response.status, response.headers, body)

    def model_ids(self, reply: UpstreamReply) -> list[str] | None:
        data = (json_object(reply.body) or {}).get("data")
        if not isinstance(data, list):
            return None
        ids = {m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)}
        return sorted(ids)


RESPONSES = "openai_responses"
# Models that take OpenAI's `reasoning_effort` and count their answer's length in
# `max_completion_tokens` (they refuse `max_tokens`); other OpenAI-compatible servers
# know `max_tokens`, and many not the newer field.
REASONING_MODELS = re.compile(r"^(o\d|gpt-5)")


def chat_body(body: dict, typed: Request | None) -> dict:
    """What goes up to /chat/completions: the client's own chat body as it is (the hot
    path: nothing decoded), another format's encoded from its internal request."""
    if typed is None or typed.source == chat_request.FORMAT:
        return body
    reasons = REASONING_MODELS.match(typed.model.rsplit("/", 1)[-1]) is not None
    # `thinking` is asked of every model by Anthropic clients; others refuse the effort.
    reasoning = reasoning_sent(typed.reasoning, not reasons and typed.source == "anthropic")
    hints = {} if typed.source == "openai_responses" else {"metadata": None, "service_tier": None}
    # Chat has functions only: another format's built-in tools are left out (and named
    # to the client in a header, relay.py). `allowed_tools` is offered as the tools it
    # names, as few OpenAI-compatible servers know it.
    tools = [tool for tool in typed.offered_tools() if tool.kind == "function"]
    choice = typed.tool_choice
    if choice is not None and choice.mode == "allowed":
        choice = ToolChoice("required" if choice.required else "auto", parallel=choice.parallel)
    sent = chat_request.encode(
        msgspec.structs.replace(
            typed, reasoning=reasoning, tools=tools, tool_choice=choice, **hints
        )
    )
    if not reasons and "max_completion_tokens" in sent:
        sent["max_tokens"] = sent.pop("max_completion_tokens")
    return sent


# Models OpenAI serves through the Responses API only: their chat completions answer 404
# "This model is only supported in v1/responses…". A key with `responses_api` sends a chat
# or Messages client's request for one to /responses; a model not listed here is learned
# from that answer (ResponsesOnly).
RESPONSES_ONLY = re.compile(
    r"^(o1-pro|o3-pro|o3-deep-research|o4-mini-deep-research|gpt-5(\.\d+)?-pro"
    r"|gpt-5(\.\d+)?-codex|codex-mini|computer-use-preview)"
)
ONLY_RESPONSES_ERROR = b"only supported in v1/responses"
# The Responses API refuses a `max_output_tokens` below this (chat and Messages clients
# ask for 1 token to probe a model: Claude Code does at start).
LEAST_OUTPUT = 16
# What a chat or Messages request may ask that the Responses API has no field for: refused
# by name (carry.FIELDS), and `stop` (carry.FIELDS names it with temperature and top_p).
RESPONSES_REFUSED = (
    "n", "top_k", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
    "content part: input_audio", "modalities: audio, audio", "prediction",
    "web_search_options",
)  # fmt: skip


def bare(model: str) -> str:
    """A model id without a router's prefix (`openai/o3-pro` → `o3-pro`)."""
    return model.rsplit("/", 1)[-1]


class ResponsesOnly:
    """(key id, model) pairs whose upstream said the model is served through the Responses
    API only; in-process and bounded (the oldest forgotten first)."""

    SIZE = 1024

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[int, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, pair: tuple[int, str]) -> None:
        with self._lock:
            self._seen[pair] = None
            self._seen.move_to_end(pair)
            while len(self._seen) > self.SIZE:
                self._seen.popitem(last=False)

    def __contains__(self, pair: tuple[int, str]) -> bool:
        return pair in self._seen


def responses_body(provider: str, body: dict, typed: Request | None, stream: bool) -> dict:
    """A chat or Messages request as a Responses body (its internal request, or the chat
    body decoded), after refusing by name what the Responses API cannot carry."""
    if legacy_functions(body):
        raise refused(provider, "functions", BY_NAME["functions"].what)
    if typed is None:  # an OpenAI chat client's: its body decoded
        typed = chat_request.decode(body)
    for name in RESPONSES_REFUSED:
        paths = TYPED[name](typed)
        if paths:
            raise refused(provider, typed.name_of(paths[0]), BY_NAME[name].what)
    if typed.sampling.stop:
        raise refused(provider, typed.name_of("stop"), "stop sequences")
    reasons = REASONING_MODELS.match(bare(typed.model)) is not None or "codex" in typed.model
    reasoning = reasoning_sent(typed.reasoning, not reasons)  # others refuse the effort
    # Anthropic's metadata and service tier are not OpenAI's.
    hints = {"metadata": None, "service_tier": None} if typed.source == "anthropic" else {}
    sent = responses_request.encode(
        msgspec.structs.replace(typed, reasoning=reasoning, stream=stream, **hints)
    )
    if sent.get("max_output_tokens", LEAST_OUTPUT) < LEAST_OUTPUT:  # a client's probe (1)
        sent["max_output_tokens"] = LEAST_OUTPUT
    if reasons and not sent["store"]:  # its reasoning comes back to be handed on next turn
        sent["include"] = [*sent.get("include", ()), "reasoning.encrypted_content"]
    return sent


def reasoning_sent(reasoning: Reasoning | None, refused_here: bool) -> Reasoning | None:
    """The reasoning a request asks of an OpenAI upstream: none when switched off or when the
    model refuses it (`refused_here`), a thinking budget as the nearest effort."""
    if reasoning is None or reasoning.off or refused_here:
        return None
    if reasoning.effort is None:
        return Reasoning(effort=effort_of(reasoning.budget or 0), summary=reasoning.summary)
    return reasoning


def effort_of(budget: int) -> str:
    """A thinking budget of tokens as the nearest reasoning effort."""
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def responses_usage(usage: object) -> Usage | None:
    """A Responses `usage` (input_tokens, output_tokens, cached input) as the gateway's."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    cached = min(max(0, cached_of(usage, "input_tokens_details")), prompt)
    return Usage(prompt, completion, cache_read=cached)


def responses_text(response: dict) -> str:
    return "".join(
        part.get("text", "")
        for item in response.get("output") or ()
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or ()
        if isinstance(part, dict) and part.get("type") == "output_text"
    )


class ResponsesEvents:
    """Reads a Responses stream as it is relayed: its end and usage (`response.completed`,
    `.incomplete` or `.failed`) and the text sent so far."""

    ENDS = (b"response.completed", b"response.incomplete", b"response.failed")
    # The deltas of what is billed as output: the answer, tool calls' input, reasoning.
    BILLED = {
        "response.output_text.delta": True,  # True: the answer's text
        "response.refusal.delta": True,
        "response.function_call_arguments.delta": False,
        "response.custom_tool_call_input.delta": False,
        "response.reasoning_text.delta": False,
        "response.reasoning_summary_text.delta": False,
    }

    def __init__(self) -> None:
        self.done = False
        self._buffer = b""
        self._usage: Usage | None = None
        self._text: list[str] = []
        self._billed: list[str] = []  # every billed delta, in order
        self.response: dict | None = None  # as `response.created` announced it
        # The next event's sequence number (the upstream numbers them from 0): what an
        # event the gateway adds (a cut, a broken stream's end) carries.
        self.sequence = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        if b"\r" in data:
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        out = []
        while (end := self._buffer.find(b"\n\n")) != -1:
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            out.append(event + b"\n\n")
            self.sequence += 1
            if b".delta" in event or any(name in event for name in self.ENDS):
                self._read(event)
            elif self.response is None and b"response.created" in event:
                self._read(event)  # the response a stream cut at the length ends
        return out

    def _read(self, event: bytes) -> None:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = json_object(line[5:].strip())
            if payload is None:
                continue
            kind = payload.get("type")
            if kind in self.BILLED and isinstance(payload.get("delta"), str):
                self._billed.append(payload["delta"])
                if self.BILLED[kind]:
                    self._text.append(payload["delta"])
            elif kind == "response.created" and isinstance(payload.get("response"), dict):
                self.response = payload["response"]
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                self.done = True
                self._usage = responses_usage((payload.get("response") or {}).get("usage"))

    def read_usage(self) -> Usage | None:
        return self._usage

    def completion_text(self) -> str:
        return "".join(self._text)

    def billable_text(self) -> str:
        return "".join(self._billed)


def completion_reply(status: int, headers: dict[str, str], body: bytes) -> UpstreamReply:
    """A chat.completion answer, normalized (a 2xx that is not a JSON object: `error`)."""
    if status >= 300:
        return error_reply(status, headers, body)
    parsed = json_object(body)
    if parsed is None:
        return UpstreamReply(status, headers, body, error="upstream answered 2xx without JSON")
    if b'"cost"' in body and strip_cost(parsed):  # an upstream's own price is not passed on
        body = _reencoded(parsed, body)
    model = parsed.get("model")
    return UpstreamReply(
        status,
        headers,
        body,
        usage=usage_of(parsed.get("usage")),
        text=_message_text(parsed),
        model=model if isinstance(model, str) else None,
    )


def error_reply(status: int, headers: dict[str, str], body: bytes) -> UpstreamReply:
    """An error answer: the body as it came, and the message found in it."""
    parsed = json_object(body)
    error = parsed.get("error") if parsed is not None else None
    text = body[:500].decode("utf-8", "replace")
    code, message = (
        (error.get("code"), error.get("message")) if isinstance(error, dict) else (None, text)
    )
    return UpstreamReply(
        status,
        headers,
        body,
        error=text or f"upstream answered {status}",
        error_shaped=isinstance(error, dict),
        overflow=context_overflow(status, code, message),
        model_missing=model_missing(status, code, message),
    )


def json_object(data: bytes) -> dict | None:
    try:
        value = orjson.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _reencoded(value: dict, original: bytes) -> bytes:
    """The value as JSON again; the original bytes if it cannot be (nested too deep)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return original


def _message_text(completion: dict) -> str:
    """All choice texts of a chat.completion (or a legacy text_completion), for estimating
    its tokens."""
    texts = []
    for choice in completion.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            texts.append(message["content"])
        elif isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    return "".join(texts)

"""A loopback HTTP server that speaks the OpenAI wire protocol, used as KeyRelay's upstream.

The gateway under test talks to it over real HTTP. Behaviour is chosen per provider secret
(the bearer token the gateway sends): a per-request script first, then the secret's fixed
behaviour, then ``Behaviour.ok()``. Secrets are only labels; a missing bearer is ``None``.

Token accounting is deterministic so tests can predict it:
  prompt_tokens     = (total characters of all message contents) // 4 + number of messages
                      (list contents count the ``text`` of their text parts)
  completion_tokens = number of whitespace-separated words in the reply content (and
                      in its reasoning and tool-call arguments)
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_CONTENT = "Hello from the fake upstream"
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o")
MODEL_CREATED = 1_700_000_000
FINGERPRINT = "fp_fake"
ERROR_KINDS = frozenset(
    {"rate_limited", "server_error", "unauthorized", "forbidden", "bad_request"}
)
_CLOSE_JOIN_SECONDS = 1.5


@dataclass(frozen=True)
class Behaviour:
    """How the fake answers one request; build it with the classmethod constructors."""

    kind: str
    content: str = DEFAULT_CONTENT
    usage: bool = True
    prompt_tokens: int | None = None
    delay: float = 0.0
    retry_after: int | float | None = None
    status: int = 200
    message: str | None = None
    code: str | None = None
    after_events: int = 3
    # LiteLLM's shape: usage in a chunk whose choices hold an empty delta, and a `cost`
    # (top level and inside usage) that a gateway must not pass on.
    litellm: bool = False
    # A tool call the model makes (name, arguments as a JSON string), after `content`.
    tool_name: str | None = None
    tool_arguments: str = "{}"
    # Reasoning streamed before the answer (`delta.reasoning_content`, as DeepSeek and
    # vLLM send it).
    reasoning: str = ""
    # `context_window`: the model's context length in the fake's tokens (see above).
    context_limit: int = 0
    # The finish_reason of a tool call's answer: OpenAI says `tool_calls`; LiteLLM and
    # other OpenAI-compatible servers say `stop`.
    tool_finish: str = "tool_calls"
    # Prompt tokens read from the prompt cache: reported as OpenAI does
    # (`prompt_tokens_details.cached_tokens`, `input_tokens_details` in the Responses API),
    # or as DeepSeek does (`prompt_cache_hit_tokens` / `_miss_tokens`) with `deepseek`.
    cached_tokens: int = 0
    deepseek: bool = False

    @classmethod
    def cached(cls, prompt_tokens: int, cached_tokens: int, deepseek: bool = False) -> Behaviour:
        """A 200 whose usage says part of the prompt came from the upstream's cache."""
        return cls("ok", prompt_tokens=prompt_tokens, cached_tokens=cached_tokens,
                   deepseek=deepseek)  # fmt: skip

    @classmethod
    def ok(
        cls,
        content: str = DEFAULT_CONTENT,
        usage: bool = True,
        prompt_tokens: int | None = None,
        reasoning: str = "",
    ) -> Behaviour:
        """A normal 200 completion (streamed when the request asks for it)."""
        return cls(
            "ok", content=content, usage=usage, prompt_tokens=prompt_tokens, reasoning=reasoning
        )

    @classmethod
    def slow(
        cls,
        delay: float = 0.5,
        content: str = DEFAULT_CONTENT,
        usage: bool = True,
        prompt_tokens: int | None = None,
    ) -> Behaviour:
        """Like ok, but waits before the headers (non-stream) or before each SSE event."""
        return cls("slow", content=content, usage=usage, prompt_tokens=prompt_tokens, delay=delay)

    @classmethod
    def tool_call(
        cls, name: str, arguments: dict, content: str = "", finish: str = "tool_calls"
    ) -> Behaviour:
        """The model calls a tool (finish_reason `tool_calls`, or `finish` as some servers
        say it); streamed, the arguments arrive split across several chunks, as OpenAI
        sends them."""
        return cls(
            "ok",
            content=content,
            tool_name=name,
            tool_arguments=json.dumps(arguments, separators=(",", ":")),
            tool_finish=finish,
        )

    @classmethod
    def litellm_style(cls, content: str = DEFAULT_CONTENT) -> Behaviour:
        """A 200 as LiteLLM Proxy sends it (usage chunk with `choices: [{"delta": {}}]`,
        and a `cost` field)."""
        return cls("ok", content=content, litellm=True)

    @classmethod
    def rate_limited(cls, retry_after: int | float | None = None) -> Behaviour:
        """429 rate_limit_exceeded, with Retry-After only when given."""
        return cls("rate_limited", status=429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500) -> Behaviour:
        """A 5xx with an OpenAI-style error body."""
        return cls("server_error", status=status)

    @classmethod
    def unauthorized(cls) -> Behaviour:
        """401 invalid_api_key."""
        return cls("unauthorized", status=401)

    @classmethod
    def forbidden(cls) -> Behaviour:
        """403 request_forbidden."""
        return cls("forbidden", status=403)

    @classmethod
    def bad_request(
        cls, message: str = "Invalid request.", code: str | None = None, status: int = 400
    ) -> Behaviour:
        """A client error: 400, 404 model_not_found, context_length_exceeded, ..."""
        return cls("bad_request", status=status, message=message, code=code)

    @classmethod
    def context_window(cls, limit: int, status: int = 400) -> Behaviour:
        """A model with a context window of `limit` tokens: a longer chat prompt (with its
        `max_tokens`) gets OpenAI's real 400 `context_length_exceeded` (status 413: the
        HTML page a fronting proxy answers a too-large body with); a shorter one, ok."""
        return cls("context_window", status=status, context_limit=limit)

    @classmethod
    def hang(cls) -> Behaviour:
        """Read the request and never answer until the fake is closed."""
        return cls("hang")

    @classmethod
    def trickle(cls, every: float = 0.25, content: str = DEFAULT_CONTENT) -> Behaviour:
        """A 200 whose body (each SSE event of a stream) comes one byte every `every`
        seconds: never silent for long, never done in time."""
        return cls("trickle", content=content, delay=every)

    @classmethod
    def cut(cls, after_events: int = 3, content: str = DEFAULT_CONTENT) -> Behaviour:
        """Drop the connection mid-response (after the role event + N content events)."""
        return cls("cut", after_events=after_events, content=content)

    @classmethod
    def malformed(cls) -> Behaviour:
        """200 whose body (or SSE data) is not JSON."""
        return cls("malformed")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    secret: str | None
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes


def count_prompt_tokens(messages: Any) -> int:
    """Chars of all message contents // 4, plus one per message."""
    if not isinstance(messages, list):
        return 0
    chars = sum(len(_content_text(m.get("content"))) for m in messages if isinstance(m, dict))
    return chars // 4 + len(messages)


def count_completion_tokens(content: str) -> int:
    """Whitespace-separated words in the reply."""
    return len(content.split())


def _content_text(content: Any) -> str:
    """Text of a message content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _argument_pieces(arguments: str) -> list[str]:
    """A tool call's arguments as streamed: in three pieces, a long one word by word (as
    upstreams send it, a few tokens at a time)."""
    if len(arguments) > 300:
        return _word_pieces(arguments)
    third = max(1, len(arguments) // 3)
    return [arguments[start : start + third] for start in range(0, len(arguments), third)]


def _word_pieces(content: str) -> list[str]:
    """Split content into one piece per word that concatenate back to the exact content."""
    pieces = re.findall(r"\s*\S+", content)
    rest = content[len("".join(pieces)) :]
    if rest and pieces:
        pieces[-1] += rest
    elif rest:
        pieces = [rest]
    return pieces


def _error(message: str, type_: str, code: Any = None, param: str | None = None) -> dict:
    """An OpenAI error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _mask(secret: str | None) -> str:
    """Mask a key the way OpenAI echoes it in 401 messages."""
    if not secret:
        return "''"
    return secret[:3] + "*" * max(len(secret) - 7, 1) + secret[-4:]


def _server_error_body(status: int) -> dict:
    """The body api.openai.com (or its edge) returns for a given 5xx."""
    if status == 502:
        return _error("Bad gateway.", "cf_bad_gateway", code=502)
    if status == 503:
        return _error("The engine is currently overloaded, please try again later.", "server_error")
    return _error(
        "The server had an error while processing your request. Sorry about that!", "server_error"
    )


def _error_response(b: Behaviour, secret: str | None) -> tuple[int, dict, dict[str, str]]:
    """Status, body and extra headers for an error behaviour."""
    if b.kind == "rate_limited":
        headers = {"x-ratelimit-remaining-requests": "0"}
        message = "Rate limit reached for requests in organization org-fake: Limit 3, Used 3."
        if b.retry_after is not None:
            headers["Retry-After"] = str(b.retry_after)
            message += f" Please try again in {b.retry_after}s."
        return 429, _error(message, "requests", code="rate_limit_exceeded"), headers
    if b.kind == "server_error":
        return b.status, _server_error_body(b.status), {}
    if b.kind == "unauthorized":
        message = (
            f"Incorrect API key provided: {_mask(secret)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return 401, _error(message, "invalid_request_error", code="invalid_api_key"), {}
    if b.kind == "forbidden":
        body = _error(
            "Country, region, or territory not supported",
            "request_forbidden",
            code="unsupported_country_region_territory",
        )
        return 403, body, {}
    param = "messages" if b.code == "context_length_exceeded" else None
    return b.status, _error(b.message or "", "invalid_request_error", b.code, param), {}


def _context_overflow(b: Behaviour, body: Any) -> tuple[int, str, bytes] | None:
    """(status, content type, body) of a prompt too long for the window, or None."""
    if not isinstance(body, dict):
        return None
    used = count_prompt_tokens(body.get("messages"))
    answer = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    if used + answer <= b.context_limit:
        return None
    if b.status == 413:
        page = b"<html><head><title>413 Request Entity Too Large</title></head><body>"
        page += b"<center><h1>413 Request Entity Too Large</h1></center></body></html>"
        return 413, "text/html", page
    message = f"This model's maximum context length is {b.context_limit} tokens. "
    if answer:
        message += (
            f"However, you requested {used + answer} tokens ({used} in the messages, "
            f"{answer} in the completion). Please reduce the length of the messages or completion."
        )
    else:
        message += (
            f"However, your messages resulted in {used} tokens. Please reduce the length of "
            "the messages."
        )
    error = _error(message, "invalid_request_error", "context_length_exceeded", "messages")
    return 400, "application/json", json.dumps(error).encode()


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection; many requests when the client keeps it alive."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # each SSE event must leave as soon as it is written
    server: _Server

    def do_GET(self) -> None:
        """Any method goes through the same router."""
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _serve(self) -> None:
        """Record the request, pick its behaviour and answer."""
        upstream = self.server.upstream
        raw = self._read_body()
        body = _parse_json(raw)
        secret = _bearer(self.headers.get("Authorization"))
        headers = {k.lower(): v for k, v in self.headers.items()}
        upstream._record(RecordedRequest(secret, self.command, self.path, headers, body, raw))
        route = self._route(body)
        if route is None:
            message = f"Invalid URL ({self.command} {urlsplit(self.path).path})"
            self._send_json(404, _error(message, "invalid_request_error"))
            return
        behaviour = upstream._next_behaviour(secret)
        if behaviour.kind == "context_window":
            too_long = _context_overflow(behaviour, body)
            if too_long is not None:
                self._send_raw(*too_long)
                return
            behaviour = Behaviour.ok()
        if behaviour.kind in ERROR_KINDS:
            self._send_json(*_error_response(behaviour, secret))
        elif behaviour.kind == "hang":
            self.server.released.wait()
            self._abort()
        elif behaviour.kind == "malformed":
            self._malformed(isinstance(body, dict) and bool(body.get("stream")))
        else:
            route(behaviour)

    def _route(self, body: Any):
        """The handler for this method and path, or None for an unknown URL."""
        path = urlsplit(self.path).path.rstrip("/")
        if self.command == "POST" and path == "/v1/chat/completions":
            return lambda b: self._chat(b, body)
        if self.command == "POST" and path == "/v1/embeddings":
            return lambda b: self._embeddings(b, body)
        if self.command == "POST" and path == "/v1/completions":
            return lambda b: self._completions(b, body)
        if self.command == "POST" and path == "/v1/responses":
            return lambda b: self._responses(b, body)
        if self.command in ("GET", "DELETE") and path.startswith("/v1/responses/"):
            return lambda b: self._stored_response(path[len("/v1/responses/") :])
        if self.command == "GET" and path == "/v1/key":  # OpenRouter's key info
            return lambda b: self._key_info()
        if self.command == "GET" and path == "/v1/models":
            return self._list_models
        if self.command == "GET" and path.startswith("/v1/models/"):
            model_id = unquote(path[len("/v1/models/") :])
            return lambda b: self._get_model(b, model_id)
        return None

    def _embeddings(self, b: Behaviour, body: Any) -> None:
        """POST /v1/embeddings: a deterministic vector per input (float or base64)."""
        inputs = body.get("input") if isinstance(body, dict) else None
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
        ):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            self._send_json(400, _error("'input' is required", "invalid_request_error"))
            return
        size = body.get("dimensions") or 8
        data, tokens = [], 0
        for index, item in enumerate(inputs):
            seed = sum(item) if isinstance(item, list) else len(item)
            tokens += len(item) if isinstance(item, list) else len(item.split())
            vector = [round((seed + i) / 100, 4) for i in range(size)]
            if body.get("encoding_format") == "base64":
                packed = struct.pack(f"<{size}f", *vector)
                vector = base64.b64encode(packed).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        answer = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        self._deliver_json(b, answer, usage)

    def _completions(self, b: Behaviour, body: Any) -> None:
        """POST /v1/completions (legacy), streamed or not."""
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt, str | list):
            self._send_json(400, _error("'prompt' is required", "invalid_request_error"))
            return
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        usage = {
            "prompt_tokens": len(text.split()),
            "completion_tokens": count_completion_tokens(b.content),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        base = {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
        }
        if not body.get("stream"):
            choice = {"text": b.content, "index": 0, "logprobs": None, "finish_reason": "stop"}
            self._deliver_json(b, {**base, "choices": [choice], "usage": usage}, usage)
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        pieces = _word_pieces(b.content)
        chunks = [
            {**base, "choices": [{"text": p, "index": 0, "logprobs": None, "finish_reason": None}]}
            for p in pieces
        ]
        last = {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}
        chunks.append({**base, "choices": [last]})
        sent_usage = usage if include_usage else None
        if sent_usage:
            chunks.append({**base, "choices": [], "usage": usage})
        events = [_sse(c) for c in chunks] + [b"data: [DONE]\n\n"]
        self._deliver_stream(b, events, min(b.after_events, len(pieces)), sent_usage)

    def _responses(self, b: Behaviour, body: Any) -> None:
        """POST /v1/responses (OpenAI's own Responses API), streamed or not."""
        if not isinstance(body, dict) or ("input" not in body and "prompt" not in body):
            self._send_json(400, _error("'input' is required", "invalid_request_error"))
            return
        most = body.get("max_output_tokens")
        if isinstance(most, int) and most < 16:  # OpenAI's own floor, and its answer
            message = ("Invalid 'max_output_tokens': integer below minimum value. Expected a "
                       f"value >= 16, but got {most} instead.")  # fmt: skip
            error = _error(message, "invalid_request_error", "integer_below_min_value",
                           "max_output_tokens")  # fmt: skip
            self._send_json(400, error)
            return
        secret = _bearer(self.headers.get("Authorization"))
        previous = body.get("previous_response_id")
        if not self.server.upstream._holds(secret, previous):
            message = f"Previous response with id '{previous}' not found."
            error = _error(message, "invalid_request_error", "previous_response_not_found")
            self._send_json(400, {"error": {**error["error"], "param": "previous_response_id"}})
            return
        prompt = b.prompt_tokens or count_completion_tokens(
            json.dumps(body.get("input") or body.get("prompt"))
        )
        thought = count_completion_tokens(b.reasoning)  # billed as output, as OpenAI does
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": b.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": count_completion_tokens(b.content) + thought,
            "output_tokens_details": {"reasoning_tokens": thought},
        }
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        # A reasoning model's summary of its thinking comes first (its encrypted content
        # only when asked for, as `store` false callers do).
        reasoning = _reasoning_item(b.reasoning, body) if b.reasoning else None
        where = 1 if reasoning else 0  # the message's output index
        item = {
            "id": "msg_upstream",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": b.content, "annotations": [], "logprobs": []}
            ],
        }
        if b.tool_name:  # the model calls a tool instead (a function_call item)
            call = {"id": "fc_upstream", "type": "function_call", "status": "completed",
                    "call_id": "call_" + uuid.uuid4().hex[:16], "name": b.tool_name,
                    "arguments": b.tool_arguments}  # fmt: skip
            self._responses_call(b, body, call, usage)
            return
        response = _response_object(body, [reasoning, item] if reasoning else [item], usage)
        if body.get("store") is not False:
            self.server.upstream._keep(secret, response)
        reported = {"prompt_tokens": prompt, "completion_tokens": usage["output_tokens"]}
        if not body.get("stream"):
            self._deliver_json(b, response, reported)
            return
        number = iter(range(1000))

        def event(kind: str, payload: dict) -> bytes:
            data = {"type": kind, "sequence_number": next(number), **payload}
            return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

        started = {**response, "status": "in_progress", "output": []}
        del started["usage"]
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        at = {"item_id": "msg_upstream", "output_index": where, "content_index": 0}
        events = [event("response.created", {"response": started})]
        if reasoning:  # the summary's part and deltas around it, as OpenAI sends them
            summary = {"item_id": reasoning["id"], "output_index": 0, "summary_index": 0}
            events.append(event("response.output_item.added", {"output_index": 0, "item": {
                **reasoning, "summary": [], "encrypted_content": None}}))  # fmt: skip
            events.append(event("response.reasoning_summary_part.added", {
                **summary, "part": {"type": "summary_text", "text": ""}}))  # fmt: skip
            events += [
                event("response.reasoning_summary_text.delta", {**summary, "delta": piece})
                for piece in _word_pieces(b.reasoning)
            ]
            events.append(event("response.reasoning_summary_text.done", {
                **summary, "text": b.reasoning}))  # fmt: skip
            events.append(event("response.reasoning_summary_part.done", {
                **summary, "part": reasoning["summary"][0]}))  # fmt: skip
            events.append(event("response.output_item.done", {
                "output_index": 0, "item": reasoning}))  # fmt: skip
        # The item and part around the deltas, as OpenAI sends them (Codex needs them).
        events.append(event("response.output_item.added", {"output_index": where, "item": {
            **item, "status": "in_progress", "content": []}}))  # fmt: skip
        events.append(event("response.content_part.added", {**at, "part": part}))
        events += [
            event("response.output_text.delta", {**at, "delta": piece, "logprobs": []})
            for piece in _word_pieces(b.content)
        ]
        done = {**at, "text": b.content, "logprobs": []}
        events.append(event("response.output_text.done", done))
        events.append(event("response.content_part.done", {**at, "part": item["content"][0]}))
        events.append(event("response.output_item.done", {"output_index": where, "item": item}))
        events.append(event("response.completed", {"response": response}))
        self._deliver_stream(b, events, len(events) - 1, reported)

    def _responses_call(self, b: Behaviour, body: dict, call: dict, usage: dict) -> None:
        """A Responses answer whose only output is a function call, streamed or not."""
        response = _response_object(body, [call], usage)
        started = {**response, "status": "in_progress", "output": []}
        del started["usage"]
        if body.get("store") is not False:
            self.server.upstream._keep(_bearer(self.headers.get("Authorization")), response)
        reported = {"prompt_tokens": usage["input_tokens"], "completion_tokens": 0}
        if not body.get("stream"):
            self._deliver_json(b, response, reported)
            return
        events = []
        for number, (kind, payload) in enumerate(
            [
                ("response.created", {"response": started}),
                ("response.output_item.added", {"output_index": 0, "item": {
                    **call, "status": "in_progress", "arguments": ""}}),
                *[("response.function_call_arguments.delta", {
                    "item_id": call["id"], "output_index": 0, "delta": part})
                  for part in _argument_pieces(call["arguments"])],
                ("response.function_call_arguments.done", {
                    "item_id": call["id"], "output_index": 0, "name": call["name"],
                    "arguments": call["arguments"]}),
                ("response.output_item.done", {"output_index": 0, "item": call}),
                ("response.completed", {"response": response}),
            ]
        ):  # fmt: skip
            data = {"type": kind, "sequence_number": number, **payload}
            events.append(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
        self._deliver_stream(b, events, len(events) - 1, reported)

    def _stored_response(self, response_id: str) -> None:
        """GET or DELETE /v1/responses/{id}: a response this account made, else 404."""
        secret = _bearer(self.headers.get("Authorization"))
        upstream = self.server.upstream
        with upstream._lock:
            held = upstream.stored.get(response_id)
            if held is not None and held[0] == secret and self.command == "DELETE":
                del upstream.stored[response_id]
        if held is None or held[0] != secret:
            message = f"Response with id '{response_id}' not found."
            self._send_json(404, _error(message, "invalid_request_error"))
        elif self.command == "DELETE":
            self._send_json(200, {"id": response_id, "object": "response", "deleted": True})
        else:
            self._send_json(200, held[1])

    def _key_info(self) -> None:
        """GET /v1/key as OpenRouter answers it: the key's credit limit and usage in USD."""
        secret = _bearer(self.headers.get("Authorization"))
        limit, usage = self.server.upstream.key_info.get(secret, (None, 0.0))
        remaining = None if limit is None else limit - usage
        data = {"label": f"sk-or-v1-{_mask(secret)}", "limit": limit, "usage": usage,
                "limit_remaining": remaining, "is_free_tier": False}  # fmt: skip
        self._send_json(200, {"data": data})

    def _list_models(self, b: Behaviour) -> None:
        """GET /v1/models."""
        data = [_model_object(m) for m in self.server.upstream.models]
        self._deliver_json(b, {"object": "list", "data": data})

    def _get_model(self, b: Behaviour, model_id: str) -> None:
        """GET /v1/models/<id>."""
        if model_id in self.server.upstream.models:
            self._deliver_json(b, _model_object(model_id))
            return
        message = f"The model '{model_id}' does not exist"
        self._send_json(404, _error(message, "invalid_request_error", "model_not_found", "model"))

    def _chat(self, b: Behaviour, body: Any) -> None:
        """POST /v1/chat/completions, streamed or not."""
        problem = _validate_chat(body)
        if problem:
            self._send_json(400, problem)
            return
        if body["model"] in self.server.upstream.responses_only:  # OpenAI's own answer
            message = "This model is only supported in v1/responses and not in v1/chat/completions."
            self._send_json(404, _error(message, "invalid_request_error", param="model"))
            return
        usage = {
            "prompt_tokens": (
                b.prompt_tokens
                if b.prompt_tokens is not None
                else count_prompt_tokens(body["messages"])
            ),
            "completion_tokens": count_completion_tokens(b.content)
            + (count_completion_tokens(b.tool_arguments) if b.tool_name else 0)
            + count_completion_tokens(b.reasoning),  # billed as output, as upstreams do
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        _report_cache(b, usage)
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._chat_stream(b, body["model"], ident, usage, include_usage)
            return
        completion = {
            "id": ident,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": b.content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "system_fingerprint": FINGERPRINT,
        }
        if b.tool_name:
            message = completion["choices"][0]["message"]
            message["content"] = b.content or None
            message["tool_calls"] = [
                {
                    "id": TOOL_CALL_ID,
                    "type": "function",
                    "function": {"name": b.tool_name, "arguments": b.tool_arguments},
                }
            ]
            completion["choices"][0]["finish_reason"] = b.tool_finish
        if b.usage:
            completion["usage"] = usage
        if b.litellm:
            completion["usage"] = {**usage, "cost": 0.000042}
            completion["cost"] = 0.000042
        self._deliver_json(b, completion, usage if b.usage else None)

    def _chat_stream(
        self, b: Behaviour, model: str, ident: str, usage: dict, include_usage: bool
    ) -> None:
        """Build the SSE events of a streamed completion and send them."""
        base = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }

        def chunk(delta: dict, finish: str | None = None) -> dict:
            c = {**base, "choices": [_choice(delta, finish)]}
            if include_usage:
                c["usage"] = None
            return c

        pieces = _word_pieces(b.content)
        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        chunks += [chunk({"reasoning_content": p}) for p in _word_pieces(b.reasoning)]
        chunks += [chunk({"content": p}) for p in pieces]
        if b.tool_name:
            call = {"index": 0, "id": TOOL_CALL_ID, "type": "function"}
            call["function"] = {"name": b.tool_name, "arguments": ""}
            chunks.append(chunk({"tool_calls": [call]}))
            for part in _argument_pieces(b.tool_arguments):
                piece = {"index": 0, "function": {"arguments": part}}
                chunks.append(chunk({"tool_calls": [piece]}))
            chunks.append(chunk({}, b.tool_finish))
        else:
            chunks.append(chunk({}, "stop"))
        sent_usage = usage if include_usage and b.usage else None
        if sent_usage and b.litellm:
            chunks.append(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {}}],
                    "usage": {**sent_usage, "cost": 0.000042},
                    "cost": 0.000042,
                }
            )
        elif sent_usage:
            chunks.append({**base, "choices": [], "usage": sent_usage})
        events = [_sse(c) for c in chunks] + [b"data: [DONE]\n\n"]
        self._deliver_stream(b, events, 1 + min(b.after_events, len(pieces)), sent_usage)

    def _deliver_json(self, b: Behaviour, payload: dict, usage: dict | None = None) -> None:
        """Send a 200 JSON body, honouring slow and cut."""
        if b.kind == "slow" and not self._pause(b.delay):
            self._abort()
            return
        if b.kind == "cut":
            data = json.dumps(payload, indent=2).encode()
            self._start(200, "application/json", {"Content-Length": str(len(data))})
            self.wfile.write(data[: len(data) // 2])
            self._abort()
            return
        data = json.dumps(payload, indent=2).encode()
        self._start(200, "application/json", {"Content-Length": str(len(data))})
        if b.kind == "trickle":
            self._trickle(b, data, self.wfile.write)
            return
        # Report before the last byte so a client that saw the whole body can rely on the record.
        self.wfile.write(data[:-1])
        if usage is not None:
            self.server.upstream._report_usage(usage)
        self.wfile.write(data[-1:])

    def _deliver_stream(
        self, b: Behaviour, events: list[bytes], cut_at: int, usage: dict | None
    ) -> None:
        """Write each SSE event as its own HTTP chunk, honouring slow and cut."""
        self._start(200, "text/event-stream; charset=utf-8", {"Transfer-Encoding": "chunked"})
        for i, event in enumerate(events):
            if b.kind == "cut" and i >= cut_at:
                self._abort()
                return
            if b.kind == "slow" and not self._pause(b.delay):
                self._abort()
                return
            if b.kind == "trickle":
                if not self._trickle(b, event, self._write_chunk):
                    return
                continue
            self._write_chunk(event)
            # Report as soon as the usage event is out, before [DONE] lets the client finish.
            if usage is not None and i == len(events) - 2:
                self.server.upstream._report_usage(usage)
        self._write_chunk(b"")

    def _malformed(self, stream: bool) -> None:
        """A 200 whose payload cannot be parsed as JSON."""
        if not stream:
            self._send_raw(200, "application/json", b"<html><body>upstream hiccup</body></html>")
            return
        self._start(200, "text/event-stream; charset=utf-8", {"Transfer-Encoding": "chunked"})
        self._write_chunk(b'data: {"id": "chatcmpl-broken", "choices": [\n\n')
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        """Send a complete JSON response with Content-Length."""
        self._send_raw(status, "application/json", json.dumps(payload, indent=2).encode(), headers)

    def _send_raw(
        self, status: int, content_type: str, data: bytes, headers: dict | None = None
    ) -> None:
        """Send a complete response body with Content-Length."""
        self._start(status, content_type, {**(headers or {}), "Content-Length": str(len(data))})
        self.wfile.write(data)

    def _start(self, status: int, content_type: str, headers: dict[str, str]) -> None:
        """Send the status line and headers."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _write_chunk(self, data: bytes) -> None:
        """One HTTP/1.1 chunk in a single write; empty data is the terminator."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _trickle(self, b: Behaviour, data: bytes, write) -> bool:
        """Write `data` a byte at a time, `b.delay` apart; False if the reader went or the
        fake is closing."""
        for i in range(len(data)):
            if not self._pause(b.delay):
                self._abort()
                return False
            try:
                write(data[i : i + 1])
            except OSError:
                return False
        return True

    def _pause(self, delay: float) -> bool:
        """Wait while the test holds the fake (FakeUpstream.hold), then sleep; either ends
        when the fake is closing. False means stop now."""
        while not self.server.upstream.going.wait(0.05):
            if self.server.released.is_set():
                return False
        return not self.server.released.wait(delay)

    def _abort(self) -> None:
        """Drop the connection without finishing the response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _read_body(self) -> bytes:
        """The whole request body, so keep-alive stays in sync."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        """Decode a chunked request body, discarding trailers."""
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(parts)


TOOL_CALL_ID = "call_fake0123456789abcdef"


def _report_cache(b: Behaviour, usage: dict) -> None:
    """Add the prompt-cache hit to a chat usage, in OpenAI's words or DeepSeek's."""
    if not b.cached_tokens:
        return
    if b.deepseek:
        usage["prompt_cache_hit_tokens"] = b.cached_tokens
        usage["prompt_cache_miss_tokens"] = usage["prompt_tokens"] - b.cached_tokens
    else:
        usage["prompt_tokens_details"] = {"cached_tokens": b.cached_tokens, "audio_tokens": 0}


def _choice(delta: dict, finish: str | None) -> dict:
    """One streamed choice."""
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def _sse(payload: dict) -> bytes:
    """One SSE data event."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _response_object(body: dict, output: list[dict], usage: dict) -> dict:
    """A completed Responses `response` object with every field OpenAI's has."""
    tools = [
        {"strict": True, "parameters": None, **tool} if tool.get("type") == "function" else tool
        for tool in body.get("tools") or []
        if isinstance(tool, dict)
    ]
    return {
        "id": "resp_upstream_" + uuid.uuid4().hex[:8],
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "completed_at": int(time.time()),
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": tools,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    }


def _reasoning_item(text: str, body: dict) -> dict:
    """A reasoning item with its summary; its encrypted content only when the request
    includes it."""
    wanted = "reasoning.encrypted_content" in (body.get("include") or ())
    encrypted = "enc_" + base64.b64encode(text.encode()).decode() if wanted else None
    return {"id": "rs_upstream", "type": "reasoning", "encrypted_content": encrypted,
            "summary": [{"type": "summary_text", "text": text}]}  # fmt: skip


def _model_object(model_id: str) -> dict:
    """A /v1/models entry."""
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "fake"}


def _validate_chat(body: Any) -> dict | None:
    """The 400 body OpenAI would send for an unusable chat request, or None."""
    if not isinstance(body, dict):
        return _error(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly.)",
            "invalid_request_error",
        )
    if not isinstance(body.get("model"), str):
        return _error("you must provide a model parameter", "invalid_request_error", param="model")
    if not isinstance(body.get("messages"), list):
        return _error(
            "Missing required parameter: 'messages'.",
            "invalid_request_error",
            "missing_required_parameter",
            "messages",
        )
    # As OpenAI: a tool message answers a tool call of the assistant message before it.
    open_calls: set[str] = set()
    for message in body["messages"]:
        role = message.get("role") if isinstance(message, dict) else None
        if role == "assistant":
            open_calls = {c.get("id") for c in message.get("tool_calls") or ()}
        elif role == "tool":
            if message.get("tool_call_id") not in open_calls:
                return _error(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    "invalid_request_error",
                    param="messages",
                )
        else:
            open_calls = set()
    return None


def _parse_json(raw: bytes) -> Any:
    """Parsed JSON, or None when the body is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _bearer(header: str | None) -> str | None:
    """The secret from an Authorization: Bearer header."""
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


class _Server(ThreadingHTTPServer):
    """Tracks live connections and handler threads so close() can release them."""

    daemon_threads = True
    block_on_close = False  # close() joins with a deadline instead of forever
    request_queue_size = 128  # 50 clients connecting at once are not refused a SYN

    def __init__(self, upstream: FakeUpstream) -> None:
        super().__init__(("127.0.0.1", 0), upstream.handler)
        self.upstream = upstream
        self.released = threading.Event()
        self._live_lock = threading.Lock()
        self._live_conns: set[socket.socket] = set()
        self._live_threads: set[threading.Thread] = set()

    def process_request(self, request, client_address) -> None:
        """Serve each connection on its own tracked daemon thread."""
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address), daemon=True
        )
        with self._live_lock:
            self._live_conns.add(request)
            self._live_threads.add(thread)
        thread.start()

    def _serve_connection(self, request, client_address) -> None:
        """Run the handler and forget the thread when it ends."""
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._live_threads.discard(threading.current_thread())

    def shutdown_request(self, request) -> None:
        """Forget the connection, then close it."""
        with self._live_lock:
            self._live_conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """Clients hanging up mid-response are expected; report anything else."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def drop_all(self, timeout: float) -> None:
        """Unblock every handler (idle keep-alive reads included) and wait for them."""
        with self._live_lock:
            conns, threads = list(self._live_conns), list(self._live_threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class FakeUpstream:
    """An OpenAI-compatible server on 127.0.0.1 whose behaviour tests script per secret."""

    handler: type[BaseHTTPRequestHandler] = _Handler  # a fake of another provider adds to it

    def __init__(self, models: list[str] | tuple[str, ...] = DEFAULT_MODELS) -> None:
        self.models = list(models)
        # Models served through /v1/responses only: their chat completions answer 404 as
        # OpenAI's do ("only supported in v1/responses").
        self.responses_only: set[str] = set()
        # Cleared by hold(): `slow` answers wait for it (set again by let_go()).
        self.going = threading.Event()
        self.going.set()
        # OpenRouter's key info per secret: (credit limit in USD or None, usage in USD).
        self.key_info: dict[str | None, tuple[float | None, float]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._behaviours: dict[str | None, Behaviour] = {}
        self._scripts: dict[str | None, deque[Behaviour]] = {}
        self._requests: list[RecordedRequest] = []
        self._usage: list[dict] = []
        # The Responses API's stored responses: id → (the secret that made it, the response).
        self.stored: dict[str, tuple[str | None, dict]] = {}
        self._closed = False
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"fake-upstream-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The listening port."""
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in /v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def usage_reported(self) -> list[dict]:
        """A snapshot of every usage object sent in a completed response or stream."""
        with self._lock:
            return [dict(u) for u in self._usage]

    def requests_for(self, secret: str | None) -> list[RecordedRequest]:
        """Requests that carried this bearer secret."""
        return [r for r in self.requests if r.secret == secret]

    def hold(self) -> None:
        """Keep `slow` answers waiting, however long the test takes, until let_go()."""
        self.going.clear()

    def let_go(self) -> None:
        """Let the answers hold() kept waiting go on."""
        self.going.set()

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least count requests arrived; raise TimeoutError otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(f"expected {count} requests, got {len(self._requests)}")
            return list(self._requests)

    def set_behaviour(self, secret: str | None, behaviour: Behaviour | None) -> None:
        """Every request with this secret behaves so (None restores the default ok)."""
        with self._lock:
            if behaviour is None:
                self._behaviours.pop(secret, None)
            else:
                self._behaviours[secret] = behaviour

    def script(self, secret: str | None, behaviours: list[Behaviour]) -> None:
        """Queue behaviours for this secret's next requests, after any already queued."""
        with self._lock:
            self._scripts.setdefault(secret, deque()).extend(behaviours)

    def reset(self) -> None:
        """Forget behaviours, scripts, recorded requests and reported usage."""
        with self._lock:
            self._behaviours.clear()
            self._scripts.clear()
            self._requests.clear()
            self._usage.clear()
            self.stored.clear()

    def close(self) -> None:
        """Stop listening, release hanging handlers and drop open connections."""
        if self._closed:
            return
        self._closed = True
        self._server.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_all(_CLOSE_JOIN_SECONDS)
        self._thread.join()

    def __enter__(self) -> FakeUpstream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _record(self, request: RecordedRequest) -> None:
        """Append a received request."""
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _keep(self, secret: str | None, response: dict) -> None:
        """Store a response the account made (for previous_response_id and GET)."""
        with self._lock:
            self.stored[response["id"]] = (secret, response)

    def _holds(self, secret: str | None, response_id: object) -> bool:
        """Whether this account may continue the response: one it made, or none asked.
        An id the fake never made (`resp_x`) is taken as some account's own."""
        if not isinstance(response_id, str) or not response_id.startswith("resp_upstream_"):
            return True
        with self._lock:
            held = self.stored.get(response_id)
        return held is not None and held[0] == secret

    def _report_usage(self, usage: dict) -> None:
        """Append a usage object that was fully sent."""
        with self._lock:
            self._usage.append(dict(usage))

    def _next_behaviour(self, secret: str | None) -> Behaviour:
        """Scripted behaviour first, then the secret's fixed one, then ok."""
        with self._lock:
            queue = self._scripts.get(secret)
            if queue:
                return queue.popleft()
            return self._behaviours.get(secret) or Behaviour.ok()

"""A fake Anthropic API on loopback: the Messages API's real wire protocol (JSON and SSE
events, `x-api-key`, `anthropic-version`, error shapes, 429 with `retry-after`, 529
overloaded, prompt-caching usage) and the model list, with scripted behaviours per key."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

DEFAULT_TEXT = "Hello from the fake Anthropic"
MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5"]


@dataclass
class Reply:
    """How the fake answers one request."""

    kind: str = "ok"  # ok, tool_use, error, cut
    text: str = DEFAULT_TEXT
    tool_name: str | None = None
    tool_input: dict = field(default_factory=dict)
    tool_id: str | None = None  # None: TOOL_USE_ID
    status: int = 200
    error_type: str = ""
    retry_after: str | None = None
    cache_creation: int = 0
    cache_read: int = 0
    thinking: str = ""
    # (events sent, gate): the answer waits for the gate after that many stream events
    # (0: before answering at all), to hold a client mid-answer.
    holds: tuple = ()
    # A whole answer's content blocks as given (server tools' blocks, citations…).
    blocks: list = field(default_factory=list)

    @classmethod
    def held(cls, *holds: tuple[int, threading.Event]) -> Reply:
        """An ok answer that stops at each (events sent, gate) until the gate is set."""
        return cls("ok", holds=holds)

    @classmethod
    def ok(cls, text: str = DEFAULT_TEXT, cache_creation: int = 0, cache_read: int = 0,
           thinking: str = "") -> Reply:  # fmt: skip
        return cls("ok", text, cache_creation=cache_creation, cache_read=cache_read,
                   thinking=thinking)  # fmt: skip

    @classmethod
    def of_blocks(cls, blocks: list[dict]) -> Reply:
        """A whole answer whose content is these blocks."""
        return cls("ok", "".join(b.get("text", "") for b in blocks), blocks=blocks)

    @classmethod
    def tool_use(cls, name: str, tool_input: dict, text: str = "", tool_id=None) -> Reply:
        return cls("tool_use", text, tool_name=name, tool_input=tool_input, tool_id=tool_id)

    @classmethod
    def overloaded(cls) -> Reply:
        return cls("error", status=529, error_type="overloaded_error")

    @classmethod
    def rate_limited(cls, retry_after: str | None = "7") -> Reply:
        return cls("error", status=429, error_type="rate_limit_error", retry_after=retry_after)

    @classmethod
    def unauthorized(cls) -> Reply:
        return cls("error", status=401, error_type="authentication_error")

    @classmethod
    def server_error(cls) -> Reply:
        return cls("error", status=500, error_type="api_error")

    @classmethod
    def cut(cls) -> Reply:
        """A stream that stops after its first text delta."""
        return cls("cut")


@dataclass(frozen=True)
class Recorded:
    key: str | None
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def count_tokens(value: Any) -> int:
    """Words of all text in a request (a stand-in tokenizer)."""
    return len(re.findall(r"\S+", json.dumps(value)))


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_GET

    def _serve(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        key = self.headers.get("x-api-key")
        path = urlsplit(self.path).path.rstrip("/")
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake._record(Recorded(key, self.command, self.path, headers, body))
        if not key or key not in fake.keys:
            self._error(401, "authentication_error", "invalid x-api-key")
            return
        if self.command == "GET" and path == "/v1/models":
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-09-29T00:00:00Z"}
                for m in MODELS
            ]
            listing = {"data": data, "has_more": False, "first_id": MODELS[0]}
            self._json(200, {**listing, "last_id": MODELS[-1]})
            return
        if self.command != "POST" or path != "/v1/messages":
            self._error(404, "not_found_error", f"Not found: {self.command} {path}")
            return
        if not self.headers.get("anthropic-version"):
            self._error(400, "invalid_request_error", "anthropic-version header is required")
            return
        problem = _check(body)
        if problem:
            self._error(400, "invalid_request_error", problem)
            return
        prompt = count_tokens(body.get("messages")) + count_tokens(body.get("system"))
        if fake.context_window is not None and prompt > fake.context_window:
            message = f"prompt is too long: {prompt} tokens > {fake.context_window} maximum"
            self._error(400, "invalid_request_error", message)
            return
        reply = fake._next(key)
        for after, gate in reply.holds:
            if after == 0:
                gate.wait()
        if reply.kind == "error":
            extra = {"retry-after": reply.retry_after} if reply.retry_after else {}
            self._error(reply.status, reply.error_type, f"fake {reply.error_type}", extra)
            return
        usage = {
            "input_tokens": count_tokens(body.get("messages")) + count_tokens(body.get("system")),
            "output_tokens": len(_words(reply.text))
            + count_tokens(reply.tool_input)
            + len(_words(reply.thinking)),
            "cache_creation_input_tokens": reply.cache_creation,
            "cache_read_input_tokens": reply.cache_read,
        }
        if body.get("stream"):
            self._stream(reply, body, usage)
        else:
            fake._usage(usage)  # before the answer: a client may read it the moment it has one
            self._json(200, _message(reply, body["model"], usage))

    def _stream(self, reply: Reply, body: dict, usage: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        start = _message(reply, body["model"], usage)
        start.update(content=[], stop_reason=None)
        start["usage"] = {**usage, "output_tokens": 1}
        events = [("message_start", {"type": "message_start", "message": start}),
                  ("ping", {"type": "ping"})]  # fmt: skip
        index = 0
        if reply.thinking:
            events.append(_start(index, {"type": "thinking", "thinking": "", "signature": ""}))
            events += [_delta(index, {"type": "thinking_delta", "thinking": w})
                       for w in _words(reply.thinking)]  # fmt: skip
            events.append(_delta(index, {"type": "signature_delta", "signature": "sig"}))
            events.append(_stop(index))
            index += 1
        for block in reply.blocks:  # as the API streams them: each block's start, deltas, stop
            events += _block_events(index, block)
            index += 1
        if reply.text and not reply.blocks:
            events.append(_start(index, {"type": "text", "text": ""}))
            events += [_delta(index, {"type": "text_delta", "text": w}) for w in _words(reply.text)]
            events.append(_stop(index))
            index += 1
        if reply.kind == "tool_use":
            block = {"type": "tool_use", "id": reply.tool_id or TOOL_USE_ID,
                     "name": reply.tool_name, "input": {}}  # fmt: skip
            events.append(_start(index, block))
            arguments = json.dumps(reply.tool_input)
            third = max(1, len(arguments) // 3)
            pieces = [arguments[at : at + third] for at in range(0, len(arguments), third)]
            if len(arguments) > 300:  # a long input streams a few tokens at a time
                pieces = _words(arguments)
            for part in pieces:
                piece = {"type": "input_json_delta", "partial_json": part}
                events.append(_delta(index, piece))
            events.append(_stop(index))
        stop = "tool_use" if reply.kind == "tool_use" else "end_turn"
        final = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        }
        events.append(("message_delta", final))
        events.append(("message_stop", {"type": "message_stop"}))
        try:
            for number, (name, data) in enumerate(events):
                for after, gate in reply.holds:
                    if after == number and after:
                        gate.wait()
                if reply.kind == "cut" and number == 4:
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if number == len(events) - 1:  # recorded as it is sent, not after
                    self.server.fake._usage(usage)
                payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            return

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_fake_" + uuid.uuid4().hex[:8])
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, kind: str, message: str, headers: dict | None = None) -> None:
        self._json(status, {"type": "error", "error": {"type": kind, "message": message}}, headers)


TOOL_USE_ID = "toolu_fake0123456789abcdef"


def _start(index: int, block: dict) -> tuple[str, dict]:
    return "content_block_start", {"type": "content_block_start", "index": index,
                                   "content_block": block}  # fmt: skip


def _delta(index: int, delta: dict) -> tuple[str, dict]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def _stop(index: int) -> tuple[str, dict]:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def _block_events(index: int, block: dict) -> list[tuple[str, dict]]:
    """One content block streamed: text (its citations first) and a server tool's input
    as deltas; a block streamed whole otherwise (web_search_tool_result, redacted_thinking)."""
    kind = block.get("type")
    if kind == "text":
        events = [_start(index, {"type": "text", "text": ""})]
        events += [_delta(index, {"type": "citations_delta", "citation": citation})
                   for citation in block.get("citations") or ()]  # fmt: skip
        events += [_delta(index, {"type": "text_delta", "text": w})
                   for w in _words(block["text"])]  # fmt: skip
    elif kind in ("server_tool_use", "tool_use"):
        events = [_start(index, {**block, "input": {}})]
        piece = {"type": "input_json_delta", "partial_json": json.dumps(block.get("input", {}))}
        events.append(_delta(index, piece))
    else:
        events = [_start(index, block)]
    return [*events, _stop(index)]


def _message(reply: Reply, model: str, usage: dict) -> dict:
    content: list[dict] = list(reply.blocks)
    if reply.thinking:
        content.append({"type": "thinking", "thinking": reply.thinking, "signature": "sig"})
    if reply.text and not reply.blocks:
        content.append({"type": "text", "text": reply.text})
    if reply.kind == "tool_use":
        content.append({"type": "tool_use", "id": reply.tool_id or TOOL_USE_ID,
                        "name": reply.tool_name,
                        "input": reply.tool_input})  # fmt: skip
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if reply.kind == "tool_use" else "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def _check(body: Any) -> str | None:
    """What the real API refuses: no model, no max_tokens, a thinking budget under 1,024
    or not below max_tokens, roles other than user and assistant, a tool_result answering
    no tool_use of the turn before."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= body["max_tokens"]:
            return "`max_tokens` must be greater than `thinking.budget_tokens`"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    calls: set[str] = set()
    for number, message in enumerate(messages):
        # Claude Code 2.1 sends its environment as a `system` turn; the API takes it.
        if not isinstance(message, dict) or message.get("role") not in (
            "user",
            "assistant",
            "system",
        ):
            return f"messages.{number}.role: Input should be 'user', 'assistant' or 'system'"
        blocks = message.get("content")
        blocks = blocks if isinstance(blocks, list) else []
        for block in blocks:
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in calls:
                return (f"messages.{number}: unexpected `tool_use_id` found in `tool_result` "
                        "blocks; each tool_result must have a corresponding tool_use block in "
                        "the previous message")  # fmt: skip
        if message["role"] == "assistant":
            calls = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
        else:
            calls = set()
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeAnthropic


class FakeAnthropic:
    """Start with `with FakeAnthropic(keys) as fake:`; `fake.base_url` ends in /v1."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = set(keys)
        self.requests: list[Recorded] = []
        self.usage_reported: list[dict] = []
        self._scripts: dict[str, list[Reply]] = {}
        # The models' context window in the fake's tokens (None: unbounded); a longer
        # prompt gets the real API's 400 "prompt is too long: N tokens > M maximum".
        self.context_window: int | None = None
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeAnthropic:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, key: str, replies: list[Reply]) -> None:
        """The next answers for this key, in order (then `ok`)."""
        with self._lock:
            self._scripts[key] = list(replies)

    def _next(self, key: str) -> Reply:
        with self._lock:
            queue = self._scripts.get(key) or []
            return queue.pop(0) if queue else Reply.ok()

    def _record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    def _usage(self, usage: dict) -> None:
        with self._lock:
            self.usage_reported.append(dict(usage))

    @property
    def messages_requests(self) -> list[Recorded]:
        return [r for r in self.requests if urlsplit(r.path).path == "/v1/messages"]


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True

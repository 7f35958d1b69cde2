"""A fake Google AI Studio (Gemini API) on loopback: the native wire protocol
(`/v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse` with
`data: {...}\\r\\n\\r\\n` events, `:embedContent`, `:batchEmbedContents`, the paged
`GET /v1beta/models`), `x-goog-api-key`, Google's error shape (429 RESOURCE_EXHAUSTED
with RetryInfo, 400 API_KEY_INVALID for a bad key), with scripted behaviours per key."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_TEXT = "Hello from the fake Gemini"
MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-flash-preview", "gemini-embedding-001",
          "text-embedding-004"]  # fmt: skip
# Listed but serving neither content nor embeddings: key discovery leaves it out.
OTHER_MODELS = ["imagen-4.0-generate-001"]
DIMENSIONS = 8
# Gemini 3 signs its function calls and wants the signature back (or Google's stand-in).
SIGNATURE = "c2lnbmVkIGJ5IHRoZSBmYWtl"
SKIP_SIGNATURE = "skip_thought_signature_validator"
# Fields the real API takes; it refuses any other ("Invalid JSON payload received").
REQUEST_FIELDS = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig",
                  "safetySettings", "cachedContent"}  # fmt: skip
CONFIG_FIELDS = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences",
                 "candidateCount", "presencePenalty", "frequencyPenalty", "seed",
                 "responseMimeType", "responseJsonSchema", "thinkingConfig",
                 "responseLogprobs", "logprobs"}  # fmt: skip


@dataclass
class Reply:
    """How the fake answers one request."""

    kind: str = "ok"  # ok, function_call, error, cut
    text: str = DEFAULT_TEXT
    thoughts: str = ""
    cached: int = 0
    calls: list = field(default_factory=list)  # [(name, args)]
    status: int = 200
    error_status: str = ""
    retry_delay: str | None = None
    finish: str = "STOP"

    @classmethod
    def ok(cls, text: str = DEFAULT_TEXT, thoughts: str = "", cached: int = 0) -> Reply:
        return cls("ok", text, thoughts=thoughts, cached=cached)

    @classmethod
    def function_call(cls, name: str, args: dict, text: str = "") -> Reply:
        return cls("function_call", text, calls=[(name, args)])

    @classmethod
    def rate_limited(cls, retry_delay: str | None = "7s") -> Reply:
        return cls("error", status=429, error_status="RESOURCE_EXHAUSTED", retry_delay=retry_delay)

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        kind = "UNAVAILABLE" if status == 503 else "INTERNAL"
        return cls("error", status=status, error_status=kind)

    @classmethod
    def invalid(cls) -> Reply:
        return cls("error", status=400, error_status="INVALID_ARGUMENT")

    @classmethod
    def cut(cls) -> Reply:
        """A stream that stops after its first chunk."""
        return cls("cut", "one two three four five six")


@dataclass(frozen=True)
class Recorded:
    key: str | None
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def count_tokens(value: Any) -> int:
    """Words of all text in a value (a stand-in tokenizer)."""
    return len(re.findall(r"\S+", json.dumps(value))) if value else 0


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


def vector(text: str, dimensions: int) -> list[float]:
    """A deterministic embedding of a text (exactly representable as float32)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i % 32] - 128) / 128 for i in range(dimensions)]


def google_error(status: int, kind: str, message: str, details: list | None = None) -> dict:
    return {"error": {"code": status, "message": message, "status": kind,
                      "details": details or []}}  # fmt: skip


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
        key = self.headers.get("x-goog-api-key")
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake._record(Recorded(key, self.command, self.path, headers, body))
        if not key:
            self._error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers")
            return
        if key not in fake.keys:
            info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID", "domain": "googleapis.com"}  # fmt: skip
            self._error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                        [info])  # fmt: skip
            return
        if self.command == "GET" and parts.path == "/v1beta/models":
            self._models(parse_qs(parts.query).get("pageToken", ["0"])[0])
            return
        found = re.fullmatch(r"/v1beta/models/([^/:]+):(\w+)", parts.path)
        if self.command != "POST" or not found:
            self._error(404, "NOT_FOUND", f"Not found: {self.command} {parts.path}")
            return
        model, method = found.groups()
        if model not in MODELS:
            self._error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta")
            return
        if method in ("embedContent", "batchEmbedContents"):
            self._embed(model, method, body)
            return
        streamed = method == "streamGenerateContent"
        if method != "generateContent" and not streamed:
            self._error(404, "NOT_FOUND", f"Method {method} not found")
            return
        if streamed and parse_qs(parts.query).get("alt") != ["sse"]:
            self._error(400, "INVALID_ARGUMENT", "this fake speaks only alt=sse streams")
            return
        problem = _check(body, model)
        if problem:
            self._error(400, "INVALID_ARGUMENT", problem)
            return
        window = fake.context_window
        prompt = count_tokens(body.get("contents")) + count_tokens(body.get("systemInstruction"))
        if window is not None and prompt > window:
            self._error(400, "INVALID_ARGUMENT", f"The input token count ({prompt}) exceeds the "
                        f"maximum number of tokens allowed ({window}).")  # fmt: skip
            return
        reply = fake._next(key)
        if reply.kind == "error":
            self._scripted_error(reply)
            return
        usage = _usage(body, reply)
        if streamed:
            self._stream(reply, model, usage, body.get("generationConfig") or {})
        else:
            fake._usage(usage)  # before the answer: a client may read it the moment it has one
            self._json(200, _answer(reply, model, usage, body))

    def _models(self, token: str) -> None:
        names = MODELS + OTHER_MODELS
        start = int(token) if token.isdigit() else 0
        size = self.server.fake.page_size
        page = []
        for name in names[start : start + size]:
            methods = ["predict"] if name in OTHER_MODELS else (
                ["embedContent", "batchEmbedContents"] if "embedding" in name
                else ["generateContent", "countTokens"]
            )  # fmt: skip
            page.append({"name": f"models/{name}", "displayName": name,
                         "supportedGenerationMethods": methods})  # fmt: skip
        listing: dict = {"models": page}
        if start + size < len(names):
            listing["nextPageToken"] = str(start + size)
        self._json(200, listing)

    def _embed(self, model: str, method: str, body: Any) -> None:
        requests = body.get("requests") if method == "batchEmbedContents" else [body]
        if not isinstance(requests, list) or not requests:
            self._error(400, "INVALID_ARGUMENT", "requests: at least one is required")
            return
        vectors = []
        for number, request in enumerate(requests):
            if method == "batchEmbedContents" and request.get("model") != f"models/{model}":
                self._error(400, "INVALID_ARGUMENT",
                            f"requests[{number}].model must be models/{model}")  # fmt: skip
                return
            texts = [p.get("text", "") for p in (request.get("content") or {}).get("parts", ())]
            if not texts:
                self._error(400, "INVALID_ARGUMENT", "content: parts are required")
                return
            size = request.get("outputDimensionality") or DIMENSIONS
            vectors.append({"values": vector(" ".join(texts), size)})
        if method == "embedContent":
            self._json(200, {"embedding": vectors[0]})
        else:
            self._json(200, {"embeddings": vectors})

    def _scripted_error(self, reply: Reply) -> None:
        details = []
        if reply.retry_delay:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": reply.retry_delay})  # fmt: skip
        message = {
            "RESOURCE_EXHAUSTED": "You exceeded your current quota, please check your plan "
            "and billing details.",
            "INVALID_ARGUMENT": "Invalid value at 'contents' (fake)",
        }.get(reply.error_status, "The model is overloaded. Please try again later.")
        self._error(reply.status, reply.error_status, message, details)

    def _stream(self, reply: Reply, model: str, usage: dict, config: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunks = []
        partial = {"promptTokenCount": usage["promptTokenCount"]}
        for word in _words(reply.thoughts):  # thoughts stream as the answer does
            chunks.append(_chunk([{"text": word, "thought": True}], model, partial))
        for word in _words(reply.text):
            chunks.append(_chunk([{"text": word}], model, partial))
            if config.get("responseLogprobs"):  # each chunk's own tokens
                logprobs = _logprobs(word, config.get("logprobs"))
                chunks[-1]["candidates"][0]["logprobsResult"] = logprobs
        calls = _call_parts(reply, model)
        if calls:
            chunks.append(_chunk(calls, model, partial))
        final = _chunk([{"text": ""}], model, usage)
        final["candidates"][0]["finishReason"] = reply.finish
        chunks.append(final)
        try:
            for number, chunk in enumerate(chunks):
                if reply.kind == "cut" and number == 1:
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if number == len(chunks) - 1:  # recorded as it is sent, not after
                    self.server.fake._usage(usage)
                payload = b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            return

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, kind: str, message: str, details: list | None = None) -> None:
        self._json(status, google_error(status, kind, message, details))


def _usage(body: dict, reply: Reply) -> dict:
    prompt = count_tokens(body.get("contents")) + count_tokens(body.get("systemInstruction"))
    answer = len(_words(reply.text)) + sum(count_tokens(args) for _, args in reply.calls)
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": answer}
    if reply.thoughts:
        usage["thoughtsTokenCount"] = len(_words(reply.thoughts))
    if reply.cached:
        usage["cachedContentTokenCount"] = reply.cached
    usage["totalTokenCount"] = prompt + answer + usage.get("thoughtsTokenCount", 0)
    return usage


def _chunk(parts: list, model: str, usage: dict) -> dict:
    return {
        "candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0}],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": "fake-response-id",
    }


def _answer(reply: Reply, model: str, usage: dict, body: dict) -> dict:
    count = (body.get("generationConfig") or {}).get("candidateCount") or 1
    parts: list = []
    if reply.thoughts:
        parts.append({"text": reply.thoughts, "thought": True})
    if reply.text:
        parts.append({"text": reply.text})
    parts += _call_parts(reply, model)
    answer = _chunk(parts, model, usage)
    answer["candidates"][0]["finishReason"] = reply.finish
    config = body.get("generationConfig") or {}
    if config.get("responseLogprobs"):
        answer["candidates"][0]["logprobsResult"] = _logprobs(reply.text, config.get("logprobs"))
    for index in range(1, count):
        answer["candidates"].append({**answer["candidates"][0], "index": index})
    return answer


def _logprobs(text: str, top: int | None) -> dict:
    """A `logprobsResult`: each word chosen at -0.5, with `top` alternatives."""
    words = _words(text)
    chosen = [{"token": w, "logProbability": -0.5} for w in words]
    alternatives = [{"token": f"alt{n}", "logProbability": -2.0 - n} for n in range(top or 0)]
    return {
        "chosenCandidates": chosen,
        "topCandidates": [{"candidates": [chosen[i], *alternatives]} for i in range(len(words))],
    }


def _call_parts(reply: Reply, model: str) -> list[dict]:
    parts = [{"functionCall": {"name": n, "args": a}} for n, a in reply.calls]
    if parts and model.startswith("gemini-3"):
        parts[0]["thoughtSignature"] = SIGNATURE  # only the first of parallel calls
    return parts


def _signature_problem(parts: list[dict], number: int) -> str | None:
    """Gemini 3: a model turn's first function call must carry a signature it issued."""
    calls = [p for p in parts if "functionCall" in p]
    if not calls:
        return None
    signature = calls[0].get("thoughtSignature")
    if signature is None:
        return (f"Function call is missing a thought_signature in functionCall parts. "
                f"(contents[{number}])")  # fmt: skip
    if signature not in (SIGNATURE, SKIP_SIGNATURE):
        return f"Corrupted thought signature. (contents[{number}])"
    return None


def _check(body: Any, model: str = "") -> str | None:
    """What the real API refuses: unknown fields, no contents, roles other than user and
    model, a function response naming no function called in the turn before."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    unknown = set(body) - REQUEST_FIELDS or set(body.get("generationConfig") or {}) - CONFIG_FIELDS
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}"'
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    called: set[str] = set()
    for number, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{number}])"
        parts = content.get("parts") or []
        if not parts:
            return f"contents[{number}].parts must not be empty"
        for part in parts:
            response = part.get("functionResponse")
            if response is not None and response.get("name") not in called:
                return (f"contents[{number}]: function response {response.get('name')!r} "
                        "answers no function call of the previous turn")  # fmt: skip
        if content["role"] == "model" and model.startswith("gemini-3"):
            problem = _signature_problem(parts, number)
            if problem:
                return problem
        if content["role"] == "model":
            called = {p["functionCall"]["name"] for p in parts if "functionCall" in p}
        else:
            called = set()
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeGemini


class FakeGemini:
    """Start with `with FakeGemini(keys) as fake:`; `fake.base_url` ends in /v1beta."""

    def __init__(self, keys: list[str], page_size: int = 2) -> None:
        self.keys = set(keys)
        self.page_size = page_size
        self.requests: list[Recorded] = []
        self.usage_reported: list[dict] = []
        # Prompt tokens (this fake's count) past which a request is refused as too long.
        self.context_window: int | None = None
        self._scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1beta"

    def __enter__(self) -> FakeGemini:
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

    def calls(self, method: str = "generateContent") -> list[Recorded]:
        """Requests to one method (`generateContent`, `streamGenerateContent`, …)."""
        return [r for r in self.requests if urlsplit(r.path).path.endswith(":" + method)]

"""A provider key's secret never leaves KeyRelay, even when its upstream echoes it.

Each provider kind's upstream here is a loopback server that echoes every header and the
URL it got (and the credential, raw and URL-encoded as a `key=` query) in its error body,
in that kind's error shape; with 200 it echoes them in a chat answer. Every client
dialect is sent to every kind with 400/401/404/422; then the secret's bytes (and its
base64 and URL-encoded forms) must be in no answer, dashboard page, admin API output, log
line, file of the instance (database, journal) or backup archive.
"""

from __future__ import annotations

import base64
import json
import logging
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from sqlalchemy import select

from extensions import db
from gateway.keys.scrub import MASK, scrubber
from gateway.policy import Outcome
from gateway.providers.transport import Target, TransportError
from models.request_logs import RequestLog
from tests.conftest import MASTER_KEY, Web, make_viewer

# Slash, plus and equals: the URL-encoded and JSON-escaped forms differ from the secret.
SECRET = "sk-echo/Secret+Key=0123456789abcdefXYZ"
EMAIL = "echo@example.com"
BASIC = base64.b64encode(f"{EMAIL}:{SECRET}".encode()).decode()
# What must appear nowhere: the secret's tail (in the raw, URL-encoded and JSON-escaped
# forms alike), the base64 forms' tails.
LEAKS = [
    b"0123456789abcdefXYZ",
    SECRET.encode(),
    quote(SECRET, safe="").encode(),
    BASIC.rstrip("=")[-24:].encode(),
    base64.b64encode(SECRET.encode()).rstrip(b"=")[-24:],
]
KINDS = {  # kind: (model, path prefix of its base URL, key options)
    "openai": ("gpt-4o-mini", "/v1", {}),
    "anthropic": ("claude-3-5-haiku-20241022", "/v1", {}),
    "gemini": ("gemini-2.0-flash", "/v1beta", {}),
    "rovodev": ("claude-sonnet-4", "/rovodev/v2", {"email": EMAIL, "auth_scheme": "basic"}),
}
STATUSES = (400, 401, 404, 422)
DIALECTS = {  # name: (path, body without the model)
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    "chat-stream": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "stream": True},
    ),
    "completions": ("/v1/completions", {"prompt": "hi"}),
    "embeddings": ("/v1/embeddings", {"input": "hi"}),
    "responses": ("/v1/responses", {"input": "hi"}),
    "messages": (
        "/v1/messages",
        {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
    ),
    "messages-stream": (
        "/v1/messages",
        {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ),
}


def _credential(headers) -> str:
    """The secret the upstream received, however it was sent."""
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    if auth.startswith("Basic "):
        return base64.b64decode(auth[6:]).decode().split(":", 1)[1]
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or ""


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _echo(self) -> str:
        secret = _credential(self.headers)
        sent = "; ".join(f"{name}: {value}" for name, value in self.headers.items())
        return (
            f"Incorrect API key provided: {secret}. You called {self.command} "
            f"https://upstream.example{self.path}?key={quote(secret, safe='')} "
            f"with headers {sent}"
        )

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        status, echo = self.server.status, self._echo()
        if status == 200:
            stream = request.get("stream") is True or "streamGenerateContent" in self.path
            {"openai": self._ok, "anthropic": self._ok_anthropic, "gemini": self._ok_gemini}[
                self.server.kind
            ](echo, stream)
            return
        kind = self.server.kind
        if kind == "anthropic":
            body = {"type": "error", "error": {"type": "invalid_request_error", "message": echo}}
        elif kind == "gemini":
            body = {"error": {"code": status, "message": echo, "status": "INVALID_ARGUMENT"}}
        else:
            body = {"error": {"message": echo, "type": "invalid_request_error", "code": None}}
        self._send(status, "application/json", json.dumps(body).encode())

    def _ok(self, echo: str, stream: bool) -> None:
        """An OpenAI chat answer whose text echoes the request (the openai kind only)."""
        usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
        if not stream:
            message = {"role": "assistant", "content": echo}
            body = {
                "id": "chatcmpl-echo",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
            self._send(200, "application/json", json.dumps(body).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        head = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini"}
        delta = {**head, "choices": [{"index": 0, "delta": {"content": echo}}]}
        end = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        event = f"data: {json.dumps(delta)}\n\n".encode()
        cut = event.index(SECRET.encode()) + 10  # the secret split between two writes
        for part in (event[:cut], event[cut:], f"data: {json.dumps(end)}\n\n".encode()):
            self._chunk(part)
        self._chunk(f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _ok_anthropic(self, echo: str, stream: bool) -> None:
        """A Messages answer that echoes the request; streamed: an error event that does."""
        usage = {"input_tokens": 3, "output_tokens": 5}
        message = {"id": "msg_echo", "type": "message", "role": "assistant", "model": "claude"}
        if not stream:
            content = [{"type": "text", "text": echo}]
            body = {**message, "content": content, "stop_reason": "end_turn", "usage": usage}
            self._send(200, "application/json", json.dumps(body).encode())
            return
        start = {"type": "message_start", "message": {**message, "content": [], "usage": usage}}
        error = {"type": "error", "error": {"type": "overloaded_error", "message": echo}}
        self._events(
            f"event: message_start\ndata: {json.dumps(start)}\n\n",
            f"event: error\ndata: {json.dumps(error)}\n\n",
        )

    def _ok_gemini(self, echo: str, stream: bool) -> None:
        """A generateContent answer that echoes the request; streamed: an error that does."""
        if not stream:
            candidate = {"content": {"role": "model", "parts": [{"text": echo}]}}
            body = {
                "candidates": [{**candidate, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5},
            }
            self._send(200, "application/json", json.dumps(body).encode())
            return
        self._events(f"data: {json.dumps({'error': {'code': 500, 'message': echo}})}\n\n")

    def _events(self, *events: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self._chunk(event.encode())
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Echo:
    """An upstream of one kind that echoes what it got; `status` is what it answers."""

    def __init__(self, kind: str) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
        self.server.daemon_threads = True
        self.server.kind, self.server.status = kind, 401
        self.prefix = KINDS[kind][1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{self.prefix}"

    def answer(self, status: int) -> None:
        self.server.status = status

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echoes():
    servers = {kind: Echo(kind) for kind in KINDS}
    yield servers
    for echo in servers.values():
        echo.close()


def _leaks(data: bytes | str) -> list[bytes]:
    data = data.encode() if isinstance(data, str) else data
    return [form for form in LEAKS if form in data]


def _add_key(admin, kind: str, echo: Echo, profile: str) -> dict:
    model, _, options = KINDS[kind]
    fields = {"provider": kind, "name": profile, "profile": profile, "models": [model]}
    return admin.add_key(SECRET, echo.base_url, options=options, **fields)


def _proxy(http, base: str, dialect: str, model: str, profile: str):
    path, body = DIALECTS[dialect]
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "X-Profile": profile}
    headers["anthropic-version"] = "2023-06-01"
    return http.request("POST", base + path, json={**body, "model": model}, headers=headers)


def test_an_upstream_that_echoes_the_secret_never_gets_it_out(
    app, server, admin, http, echoes, caplog, tmp_path
):
    """Every kind × dialect × 400/401/404/422, a 2xx echo, the key test and usage sync:
    the secret is in no answer, page, API output, log line, instance file or backup."""
    caplog.set_level(logging.DEBUG)
    seen: list[tuple[str, bytes]] = []  # (where, what) of everything that left KeyRelay
    request_ids, cases, statuses = [], 0, {}
    for kind, echo in echoes.items():
        model = KINDS[kind][0]
        for status in STATUSES:
            echo.answer(status)
            for dialect in DIALECTS:
                profile = f"{kind}-{status}-{dialect}"
                _add_key(admin, kind, echo, profile)
                answer = _proxy(http, server.url, dialect, model, profile)
                seen.append((f"{profile} answer", answer.data))
                request_ids.append(answer.headers["x-keyrelay-request-id"])
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
                cases += 1
        # The key test and the usage sync ask the upstream too (its 401 names the key).
        echo.answer(401)
        key = _add_key(admin, kind, echo, f"{kind}-test")
        seen.append((f"{kind} key test", admin.call("POST", f"/keys/{key['id']}/test").data))
    seen.append(("usage sync", admin.call("POST", "/keys/sync").data))
    # A 2xx that echoes the secret: whole, streamed (cut between two writes), translated;
    # a stream whose error event echoes it (anthropic, gemini).
    echoed = []
    for kind in ("openai", "anthropic", "gemini"):
        echoes[kind].answer(200)
        for dialect in ("chat", "chat-stream", "responses", "messages", "messages-stream"):
            profile = f"{kind}-200-{dialect}"
            _add_key(admin, kind, echoes[kind], profile)
            answer = _proxy(http, server.url, dialect, KINDS[kind][0], profile)
            assert answer.status == 200, answer.data
            if kind == "openai" or not dialect.endswith("stream"):
                echoed.append((profile, answer.data))
            seen.append((f"{profile} answer", answer.data))
            request_ids.append(answer.headers["x-keyrelay-request-id"])
    assert cases == len(KINDS) * len(STATUSES) * len(DIALECTS)
    assert 500 not in statuses, statuses
    app.extensions["keyrelay"].books.flush()

    # The admin API and the dashboard, as admin and as viewer.
    keys = admin.call("GET", "/keys").json()
    seen.append(("GET /api/admin/keys", json.dumps(keys).encode()))
    stored_errors = [k["last_error"] for k in keys["data"] if k.get("last_error")]
    for path in ("/logs?limit=500", "/rovodev-keys", "/stats"):
        seen.append((f"GET /api/admin{path}", admin.call("GET", path).data))
    logs = admin.call("GET", "/logs?limit=500").json()["data"]
    assert any(a.get("error") for row in logs for a in row.get("attempts", []))
    pages = ["/", "/keys", "/partials/key-bars", "/partials/cards", "/partials/errors"]
    pages += ["/audit", "/logs", "/requests", "/rovodev"]
    pages += [f"/requests/{rid}" for rid in request_ids]
    with app.app_context():
        log_ids = db.session.scalars(select(RequestLog.id)).all()
    pages += [f"/logs/{log_id}/attempts" for log_id in log_ids]
    for web in (Web(app), make_viewer(app)):
        for page in pages:
            response = web.get(page, follow_redirects=True)
            assert response.status_code == 200, (page, response.status_code)
            seen.append((f"page {page}", response.data))

    leaked = [(where, _leaks(what)) for where, what in seen if _leaks(what)]
    assert not leaked, (len(leaked), len(seen), leaked[:5])
    logged = [r.getMessage() for r in caplog.records if _leaks(r.getMessage())]
    assert not logged, logged[:5]

    # Every file of the instance (database, its WAL, the journal) and a backup of it.
    instance = Path(app.config["INSTANCE_PATH"])
    files = [p for p in instance.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    in_files = [str(p) for p in files if _leaks(p.read_bytes())]
    assert not in_files, in_files
    result = app.test_cli_runner().invoke(args=["backup", "create", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    [archive] = (tmp_path / "backup").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        in_backup = [m.name for m in members if _leaks(tar.extractfile(m).read())]
    assert {m.name for m in members} >= {"manifest.json", "keyrelay.db"}
    assert not in_backup, in_backup
    assert [p for p, data in echoed if MASK.encode() not in data] == []  # echoed, masked
    assert len(stored_errors) >= len(KINDS) * 2  # the echoes were stored, masked
    assert any(MASK in error for error in stored_errors)
    broken = [row["error"] for row in logs if "stream error" in (row["error"] or "")]
    # anthropic → chat, gemini → chat and messages (anthropic → messages relays the event)
    assert len(broken) == 3 and all(MASK in error for error in broken), broken


@pytest.mark.parametrize("cut", range(1, 40))
def test_a_secret_cut_between_stream_chunks_is_scrubbed(cut):
    """Wherever a chunk boundary cuts a wire form, the stream comes out without it, and a
    chunk's end that starts no secret is not held back."""
    scrub = scrubber(SECRET, EMAIL)
    for form in (SECRET, quote(SECRET, safe=""), quote_plus(SECRET), BASIC):
        data = f'data: {{"x": "a {form} b"}}\n\n'.encode()
        at = min(cut + 8, len(data) - 1)
        out = list(scrub.chunks(iter([data[:at], data[at:], b"data: [DONE]\n\n"])))
        assert b"".join(out) == f'data: {{"x": "a {MASK} b"}}\n\n'.encode() + b"data: [DONE]\n\n"
        assert out[-1] == b"data: [DONE]\n\n"  # nothing waits past an event's end


def test_a_text_cut_inside_the_secret_is_masked():
    """An error text truncated inside the secret (an adapter's first 500 bytes) does not
    keep the secret's start."""
    scrub = scrubber(SECRET)
    assert scrub.text("Incorrect API key provided: " + SECRET[:20]) == (
        "Incorrect API key provided: " + MASK
    )
    assert scrub.text("ends with s") == "ends with s"


def test_a_transport_error_quoting_the_secret_keeps_its_outcome():
    """A connection or stream error whose message quotes a URL with `key=` (or the secret)
    comes out with the same outcome and the secret masked; a clean one is the same error."""
    target = Target(1, "rovodev", "http://upstream", SECRET, options={"email": EMAIL})
    url = f"https://upstream.example/v1?key={quote(SECRET, safe='')} Basic {BASIC}"
    scrubbed = target.scrub.error(TransportError(Outcome.TIMEOUT, f"{url}: {SECRET}"))
    assert scrubbed.outcome is Outcome.TIMEOUT
    assert str(scrubbed) == f"https://upstream.example/v1?key={MASK} Basic {MASK}: {MASK}"
    clean = TransportError(Outcome.CONNECTION_ERROR, "upstream closed the connection")
    assert target.scrub.error(clean) is clean

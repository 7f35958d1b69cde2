"""Hostile input on the faithful passthrough: client headers that cannot be sent on
(control characters, huge or endlessly repeated values) are a clear 400 and never reach an
upstream; header names in any case; a beta header of one kind never reaches another."""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import MASTER_KEY
from tests.fake_anthropic import FakeAnthropic
from tests.fake_gemini import FakeGemini

CLAUDE = "sk-ant-api03-edges-aaaaaaaaaaaaaaaa"
GEMINI = "AIzaSyEdgesTestKey-aaaaaaaaaaaaaaaaaaaa"
MESSAGE = {"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def claude():
    with FakeAnthropic([CLAUDE]) as fake:
        yield fake


def raw_post(server, path: str, body: dict, headers: bytes) -> tuple[int, bytes]:
    """POST with header lines sent byte for byte (no client library would send them)."""
    data = json.dumps(body).encode()
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {MASTER_KEY}\r\n"
        f"Content-Length: {len(data)}\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + headers + b"\r\n" + data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    "headers",
    [
        b"anthropic-beta: tools\x00-2024\r\n",  # NUL
        b"anthropic-beta: tools\x0b2024\r\n",  # a vertical tab
        b"anthropic-beta: tools\x7f\r\n",  # DEL
        b"anthropic-beta: " + b"b" * 20_000 + b"\r\n",  # huge
        (b"anthropic-beta: " + b"c" * 150 + b"\r\n") * 60,  # repeated
        b"x-claude-code-session-id: s\x01\r\n",  # a session id is read, not forwarded
    ],
    ids=["nul", "vtab", "del", "huge", "repeated", "session"],
)
def test_a_header_that_cannot_be_sent_on_is_a_clear_400(server, admin, claude, headers):
    admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
    body = {"model": "claude-sonnet-4-5", **MESSAGE}
    status, answer = raw_post(server, "/v1/messages", body, headers)
    assert status == 400, answer
    error = json.loads(answer)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    name = headers.split(b":", 1)[0].decode()
    assert f"'{name}'" in error["error"]["message"]
    assert claude.messages_requests == []
    logged = admin.logs()
    assert [row["status_code"] for row in logged] == [400]


def test_header_names_in_any_case_are_one_header(server, admin, claude):
    admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
    body = {"model": "claude-sonnet-4-5", **MESSAGE}
    headers = b"Anthropic-Beta: tools-2024\r\nANTHROPIC-BETA: files-2025 \r\n"
    status, answer = raw_post(server, "/v1/messages", body, headers)
    assert status == 200, answer
    (sent,) = claude.messages_requests
    assert sent.headers["anthropic-beta"] == "tools-2024,files-2025"


def test_no_beta_header_reaches_a_gemini_key(server, admin):
    with FakeGemini([GEMINI]) as gemini:
        admin.add_key(GEMINI, gemini.base_url, provider="gemini")
        for path, body in (
            ("/v1/messages", {"model": "gemini-2.5-flash", **MESSAGE}),
            ("/v1/chat/completions", {"model": "gemini-2.5-flash", **MESSAGE}),
        ):
            headers = b"anthropic-beta: tools-2024\r\nopenai-beta: assistants=v2\r\n"
            status, answer = raw_post(server, path, body, headers)
            assert status == 200, answer
        sent = gemini.requests
    assert len(sent) == 2
    for request in sent:
        assert not {"anthropic-beta", "openai-beta"} & set(request.headers)

"""Prove FakeUpstream is faithful by driving it with the official openai SDK and raw HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import openai
import pytest

from tests.fake_upstream import (
    DEFAULT_CONTENT,
    Behaviour,
    FakeUpstream,
    count_completion_tokens,
    count_prompt_tokens,
)

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the test suite, please."},
]


@pytest.fixture
def fake():
    """A running fake, closed after the test."""
    with FakeUpstream(models=["gpt-4o-mini", "gpt-4o"]) as upstream:
        yield upstream


def sdk(fake: FakeUpstream, key: str = "sk-x", timeout: float = 10.0) -> openai.OpenAI:
    """The official client pointed straight at the fake."""
    return openai.OpenAI(base_url=fake.base_url, api_key=key, max_retries=0, timeout=timeout)


def chat(client: openai.OpenAI, **kwargs):
    """A chat completion with the shared messages."""
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **kwargs)


def raw_request(fake: FakeUpstream, method: str, path: str, body=None, key: str = "sk-raw"):
    """Status, lower-cased headers and body bytes of one plain HTTP request."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload, headers={"Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_prompt_token_rule():
    """Chars of all contents // 4 plus one per message; text parts count too."""
    assert count_prompt_tokens(MESSAGES) == (14 + 36) // 4 + 2
    parts = [{"role": "user", "content": [{"type": "text", "text": "abcdefgh"}]}]
    assert count_prompt_tokens(parts) == 3
    assert count_completion_tokens(DEFAULT_CONTENT) == 5


def test_non_stream_ok_with_usage(fake):
    """A full chat.completion with the deterministic usage."""
    with sdk(fake) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        completion = raw.parse()
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["content-length"]) > 0
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.choices[0].finish_reason == "stop"
    prompt = count_prompt_tokens(MESSAGES)
    assert completion.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": prompt,
        "completion_tokens": 5,
        "total_tokens": prompt + 5,
    }


def test_non_stream_without_usage_and_custom_prompt_tokens(fake):
    """usage=False drops the key; prompt_tokens overrides the rule."""
    fake.script("sk-x", [Behaviour.ok("one two", usage=False), Behaviour.ok(prompt_tokens=99)])
    with sdk(fake) as client:
        bare = chat(client)
        custom = chat(client)
    assert bare.usage is None
    assert bare.choices[0].message.content == "one two"
    assert custom.usage.prompt_tokens == 99
    assert custom.usage.total_tokens == 104
    assert fake.usage_reported == [
        {"prompt_tokens": 99, "completion_tokens": 5, "total_tokens": 104}
    ]


def test_stream_reassembles_without_usage(fake):
    """Without include_usage no chunk carries usage and none is reported."""
    with sdk(fake) as client, chat(client, stream=True) as stream:
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_CONTENT
    assert len(chunks) == 1 + 5 + 1
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert fake.usage_reported == []


def test_stream_usage_only_with_include_usage(fake):
    """include_usage adds a final choices-less chunk with usage, and it is reported."""
    with (
        sdk(fake) as client,
        chat(client, stream=True, stream_options={"include_usage": True}) as stream,
    ):
        chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    prompt = count_prompt_tokens(MESSAGES)
    expected = {"prompt_tokens": prompt, "completion_tokens": 5, "total_tokens": prompt + 5}
    assert last.usage.model_dump(exclude_none=True) == expected
    assert all(c.usage is None for c in chunks[:-1])
    assert fake.usage_reported == [expected]


def test_stream_wire_format(fake):
    """Each SSE event is its own HTTP chunk; usage: null on every chunk; [DONE] then 0-chunk."""
    body = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    payload = json.dumps(body).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-w\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(request)
        reader = sock.makefile("rb")
        try:
            head = _read_head(reader)
            chunks = _read_chunks(reader)
        finally:
            reader.close()
    assert head[0].startswith(b"HTTP/1.1 200")
    headers = {k.lower(): v for k, v in (line.split(b": ", 1) for line in head[1:])}
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"transfer-encoding"] == b"chunked"
    assert b"content-length" not in headers
    assert all(
        c.startswith(b"data: ") and c.endswith(b"\n\n") and c.count(b"\n\n") == 1 for c in chunks
    )
    assert chunks[-1] == b"data: [DONE]\n\n"
    events = [json.loads(c[6:]) for c in chunks[:-1]]
    assert all("usage" in e for e in events)
    assert [e["usage"] is None for e in events] == [True] * (len(events) - 1) + [False]


def _read_head(reader) -> list[bytes]:
    """Status line and header lines of a response."""
    lines = []
    while (line := reader.readline().rstrip(b"\r\n")) != b"":
        lines.append(line)
    return lines


def _read_chunks(reader) -> list[bytes]:
    """Chunk payloads up to (excluding) the terminating zero-length chunk."""
    chunks = []
    while (size := int(reader.readline().strip(), 16)) > 0:
        chunks.append(reader.read(size))
        assert reader.read(2) == b"\r\n"
    assert reader.read(2) == b"\r\n"
    return chunks


def test_keep_alive_many_sequential_requests(fake):
    """Many requests share one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        sockets = set()
        for i in range(25):
            stream = i % 2 == 1
            body = json.dumps({"model": "m", "messages": MESSAGES, "stream": stream})
            conn.request("POST", "/v1/chat/completions", body=body)
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
            sockets.add(id(conn.sock))
    finally:
        conn.close()
    assert len(sockets) == 1
    assert len(fake.requests) == 25


@pytest.mark.parametrize("retry_after", [7, None])
def test_rate_limited(fake, retry_after):
    """429 raises RateLimitError; Retry-After only when configured."""
    fake.set_behaviour("sk-a", Behaviour.rate_limited(retry_after=retry_after))
    with sdk(fake, "sk-a") as client, pytest.raises(openai.RateLimitError) as info:
        chat(client)
    headers = info.value.response.headers
    assert headers.get("retry-after") == (None if retry_after is None else "7")
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.type == "requests"


@pytest.mark.parametrize(
    ("behaviour", "error", "code"),
    [
        (Behaviour.unauthorized(), openai.AuthenticationError, "invalid_api_key"),
        (
            Behaviour.forbidden(),
            openai.PermissionDeniedError,
            "unsupported_country_region_territory",
        ),
        (Behaviour.server_error(), openai.InternalServerError, None),
        (Behaviour.server_error(502), openai.InternalServerError, "502"),
        (Behaviour.server_error(503), openai.InternalServerError, None),
        (
            Behaviour.bad_request("too long", "context_length_exceeded"),
            openai.BadRequestError,
            "context_length_exceeded",
        ),
        (
            Behaviour.bad_request("no such model", "model_not_found", 404),
            openai.NotFoundError,
            "model_not_found",
        ),
    ],
)
def test_error_behaviours(fake, behaviour, error, code):
    """Each error maps to the SDK exception api.openai.com would trigger."""
    fake.set_behaviour("sk-e", behaviour)
    with sdk(fake, "sk-e") as client, pytest.raises(error) as info:
        chat(client, stream=True)
    assert info.value.status_code == behaviour.status
    assert info.value.code == code
    assert info.value.response.headers["content-type"] == "application/json"


def test_unauthorized_message_masks_key(fake):
    """The 401 message echoes a masked key like OpenAI."""
    fake.set_behaviour("sk-secret-1234", Behaviour.unauthorized())
    with sdk(fake, "sk-secret-1234") as client, pytest.raises(openai.AuthenticationError) as info:
        chat(client)
    assert "sk-*******1234" in info.value.message


def test_cut_stream_raises_before_completion(fake):
    """The SDK errors after the role event and three content events."""
    fake.set_behaviour("sk-c", Behaviour.cut(after_events=3))
    received = []
    with sdk(fake, "sk-c") as client, pytest.raises(openai.APIConnectionError):  # noqa: SIM117
        with chat(client, stream=True, stream_options={"include_usage": True}) as stream:
            received.extend(stream)
    assert "".join(c.choices[0].delta.content or "" for c in received) == "Hello from the"
    assert fake.usage_reported == []


def test_cut_non_stream_raises(fake):
    """A short body under a longer Content-Length is a connection error."""
    fake.set_behaviour("sk-c", Behaviour.cut())
    with sdk(fake, "sk-c") as client, pytest.raises(openai.APIConnectionError):
        chat(client)
    assert fake.usage_reported == []


def test_malformed_non_stream(fake):
    """A 200 that is not JSON."""
    fake.set_behaviour("sk-m", Behaviour.malformed())
    status, headers, body = raw_request(
        fake, "POST", "/v1/chat/completions", {"model": "m"}, "sk-m"
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(body)


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_breaks_the_sdk(fake, stream):
    """The SDK cannot decode a malformed body or SSE event."""
    fake.set_behaviour("sk-m", Behaviour.malformed())
    with sdk(fake, "sk-m") as client, pytest.raises(ValueError):
        _drain(chat(client, stream=stream))
    assert fake.usage_reported == []


def _drain(result) -> None:
    """Read a stream to the end, closing it; a plain completion is left alone."""
    if isinstance(result, openai.Stream):
        with result:
            list(result)


def test_slow_stream_relays_as_it_goes(fake):
    """The first chunk arrives long before the stream ends."""
    fake.set_behaviour("sk-s", Behaviour.slow(delay=0.3, content="one two"))
    with sdk(fake, "sk-s") as client:
        start = time.monotonic()
        with chat(client, stream=True) as stream:
            first = next(stream)
            first_at = time.monotonic() - start
            rest = list(stream)
        total = time.monotonic() - start
    assert first.choices[0].delta.role == "assistant"
    assert len(rest) == 3
    assert first_at < 0.5
    assert total > 1.0


def test_slow_non_stream_delays_headers(fake):
    """The whole response waits for the delay."""
    fake.set_behaviour("sk-s", Behaviour.slow(delay=0.3))
    with sdk(fake, "sk-s") as client:
        start = time.monotonic()
        completion = chat(client)
    assert time.monotonic() - start >= 0.3
    assert completion.choices[0].message.content == DEFAULT_CONTENT


def test_hang_times_out_client(fake):
    """A hanging upstream trips the client's timeout."""
    fake.set_behaviour("sk-h", Behaviour.hang())
    with sdk(fake, "sk-h", timeout=0.5) as client, pytest.raises(openai.APITimeoutError):
        chat(client)


def test_close_releases_hanging_request():
    """close() returns promptly with a hanging request in flight, and the client is freed."""
    fake = FakeUpstream()
    fake.set_behaviour("sk-h", Behaviour.hang())
    outcome = []

    def call() -> None:
        with sdk(fake, "sk-h", timeout=30) as client:
            try:
                chat(client)
            except openai.APIError as exc:
                outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    fake.wait_for_requests(1)
    start = time.monotonic()
    fake.close()
    assert time.monotonic() - start < 2.0
    worker.join(5)
    assert not worker.is_alive()
    assert isinstance(outcome[0], openai.APIConnectionError)


def test_close_with_idle_keep_alive_connection():
    """An idle pooled connection does not block close()."""
    fake = FakeUpstream()
    with sdk(fake) as client:
        chat(client)
        start = time.monotonic()
        fake.close()
        assert time.monotonic() - start < 2.0


def test_script_consumed_in_order_then_fallbacks(fake):
    """Script first, then the key's behaviour, then ok; other keys unaffected."""
    fake.set_behaviour("sk-b", Behaviour.rate_limited())
    fake.script("sk-b", [Behaviour.server_error(), Behaviour.ok("scripted")])
    with sdk(fake, "sk-b") as client:
        with pytest.raises(openai.InternalServerError):
            chat(client)
        assert chat(client).choices[0].message.content == "scripted"
        with pytest.raises(openai.RateLimitError):
            chat(client)
    with sdk(fake, "sk-other") as other:
        assert chat(other).choices[0].message.content == DEFAULT_CONTENT
    fake.reset()
    assert fake.requests == []
    with sdk(fake, "sk-b") as client:
        assert chat(client).choices[0].message.content == DEFAULT_CONTENT


def test_requests_are_recorded(fake):
    """Secret, method, path, lower-case headers, parsed and raw body."""
    with sdk(fake, "sk-a") as a, sdk(fake, "sk-b") as b:
        chat(a, temperature=0.5)
        b.models.list()
    first, second = fake.requests
    assert (first.secret, first.method, first.path) == ("sk-a", "POST", "/v1/chat/completions")
    assert first.body["messages"] == MESSAGES
    assert first.body["temperature"] == 0.5
    assert json.loads(first.raw) == first.body
    assert first.headers["authorization"] == "Bearer sk-a"
    assert first.headers["content-type"] == "application/json"
    assert (second.secret, second.method, second.body) == ("sk-b", "GET", None)
    assert fake.requests_for("sk-b") == [second]


def test_no_bearer_gets_default_ok(fake):
    """Missing auth is just the None label."""
    status, _, body = raw_request(fake, "GET", "/v1/models")
    assert status == 200
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        conn.request(
            "POST", "/v1/chat/completions", body=json.dumps({"model": "m", "messages": []})
        )
        resp = conn.getresponse()
        assert json.loads(resp.read())["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    finally:
        conn.close()
    assert fake.requests[-1].secret is None


def test_usage_reported_matches_sent(fake):
    """Only usage objects that went out in full are reported, in order."""
    fake.script(
        "sk-u",
        [Behaviour.ok("a b c"), Behaviour.ok(usage=False), Behaviour.ok("x y", prompt_tokens=10)],
    )
    with sdk(fake, "sk-u") as client:
        sent = [chat(client).usage]
        chat(client)
        with chat(client, stream=True, stream_options={"include_usage": True}) as stream:
            sent.append(list(stream)[-1].usage)
    assert fake.usage_reported == [u.model_dump(exclude_none=True) for u in sent]
    assert fake.usage_reported[1] == {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "total_tokens": 12,
    }


def test_models_list_and_retrieve(fake):
    """List, retrieve, 404 for unknown, and key errors apply."""
    with sdk(fake) as client:
        assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]
        model = client.models.retrieve("gpt-4o")
        assert (model.object, model.owned_by) == ("model", "fake")
        with pytest.raises(openai.NotFoundError) as info:
            client.models.retrieve("gpt-5-imaginary")
        assert info.value.code == "model_not_found"
    fake.set_behaviour("sk-bad", Behaviour.unauthorized())
    with sdk(fake, "sk-bad") as client, pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_unknown_path_is_openai_404(fake):
    """Unknown URLs get an OpenAI error body and do not consume scripts."""
    fake.script("sk-raw", [Behaviour.server_error()])
    status, headers, body = raw_request(fake, "POST", "/v1/nope", {})
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["message"] == "Invalid URL (POST /v1/nope)"
    status, _, _ = raw_request(fake, "GET", "/v1/models")
    assert status == 500


def test_invalid_chat_body_is_400(fake):
    """A chat request without messages is rejected like OpenAI does."""
    status, _, body = raw_request(fake, "POST", "/v1/chat/completions", {"model": "m"})
    assert status == 400
    assert json.loads(body)["error"]["param"] == "messages"

"""Every answer and every SSE event of KeyRelay's OpenAI endpoints against OpenAI's own
OpenAPI document (tests/openapi/openai.json): chat completions, Responses (translated for
OpenAI-format, Anthropic and Gemini upstreams, and relayed from an upstream with the
Responses API), embeddings, legacy completions, models, and the error bodies, including
an error in the middle of a stream; and Anthropic's Messages answers and events against
the anthropic SDK's own types, strictly. Requests are sent with urllib3 and read as bytes,
so nothing a lenient SDK would forgive is missed."""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field

import pytest
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from pydantic import TypeAdapter, ValidationError

from tests.conftest import MASTER_KEY
from tests.fake_anthropic import FakeAnthropic
from tests.fake_anthropic import Reply as ClaudeReply
from tests.fake_gemini import FakeGemini
from tests.fake_gemini import Reply as GeminiReply
from tests.fake_upstream import Behaviour
from tests.openai_document import assert_conforms, requests, sse_events

OPENAI = "sk-conform-openai-aaaaaaaaaaaa"
CLAUDE = "sk-ant-api03-conform-aaaaaaaaaaaa"
GEMINI = "AIzaSyConform-aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "parameters": WEATHER}
# Each path's schema for a whole answer and for one stream event.
SCHEMAS = {
    "/v1/chat/completions": ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse"),
    "/v1/responses": ("Response", "ResponseStreamEvent"),
    "/v1/completions": ("CreateCompletionResponse", "CreateCompletionResponse"),
    "/v1/embeddings": ("CreateEmbeddingResponse", None),
}


@dataclass
class Upstream:
    """One provider kind behind the gateway, and how to make it answer each way."""

    kind: str
    model: str
    script: object  # (reply kind) -> None: the next answer is of that kind
    checked: list = field(default_factory=list)


@pytest.fixture(params=["openai", "responses_api", "responses_only", "anthropic", "gemini"])
def upstream(request, admin, fake):
    """The same requests against each provider kind (`responses_api`: an OpenAI key with
    the Responses API, to which /v1/responses is relayed as it is; `responses_only`: such
    a key asked for a model only the Responses API serves, to which chat and Messages
    requests go translated)."""
    kind = request.param
    if kind in ("openai", "responses_api", "responses_only"):
        admin.add_key(OPENAI, fake.base_url, responses_api=kind != "openai")
        behaviours = {
            "ok": Behaviour.ok(),
            "reasoning": Behaviour.ok(reasoning="Thinking it over first."),
            "tool": Behaviour.tool_call("get_weather", {"city": "Lagos"}),
            "cut": Behaviour.cut(after_events=2),
            "error": Behaviour.rate_limited(retry_after=1),
        }
        model = "o3-pro" if kind == "responses_only" else "gpt-4o-mini"
        fake.responses_only = {"o3-pro"}
        yield Upstream(kind, model, lambda how: fake.script(OPENAI, [behaviours[how]]))
    elif kind == "anthropic":
        with FakeAnthropic([CLAUDE]) as claude:
            admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
            replies = {
                "ok": ClaudeReply.ok(cache_read=3, cache_creation=2),
                "reasoning": ClaudeReply.ok(thinking="Thinking it over first."),
                "tool": ClaudeReply.tool_use("get_weather", {"city": "Lagos"}, text="Let me see."),
                "cut": ClaudeReply.cut(),
                "error": ClaudeReply.rate_limited(),
            }
            yield Upstream(
                kind, "claude-sonnet-4-5", lambda how: claude.script(CLAUDE, [replies[how]])
            )
    else:
        with FakeGemini([GEMINI]) as gemini:
            admin.add_key(GEMINI, gemini.base_url, provider="gemini")
            replies = {
                "ok": GeminiReply.ok(cached=2),
                "reasoning": GeminiReply.ok(thoughts="Thinking it over first."),
                "tool": GeminiReply.function_call("get_weather", {"city": "Lagos"}),
                "cut": GeminiReply.cut(),
                "error": GeminiReply.rate_limited(),
            }
            yield Upstream(
                kind, "gemini-2.5-flash", lambda how: gemini.script(GEMINI, [replies[how]])
            )


def send(server, http, path: str, body: dict | None = None, key: str = MASTER_KEY):
    """POST (GET without a body) to KeyRelay; the status, content type and raw body."""
    headers = {"Authorization": f"Bearer {key}"}
    method = "GET" if body is None else "POST"
    answer = http.request(method, server.url + path, json=body, headers=headers)
    return answer.status, answer.headers.get("Content-Type", ""), answer.data


def check(path: str, status: int, kind: str, raw: bytes) -> int:
    """Validate a whole answer, or each event of a stream; how many objects were checked."""
    if status >= 400:
        assert_conforms("ErrorResponse", json.loads(raw))
        return 1
    whole, event_schema = SCHEMAS[path]
    if not kind.startswith("text/event-stream"):
        assert_conforms(whole, _floats(json.loads(raw)))
        return 1
    events = sse_events(raw)
    assert events, raw
    numbers = []
    for name, data in events:
        if data == b"[DONE]":
            continue
        event = json.loads(data)
        if path == "/v1/responses":
            assert name == event["type"], (name, event)
            assert_conforms(event_schema, event)
            numbers.append(event["sequence_number"])
        elif "error" in event:  # a chat stream that broke: the SDK raises on this
            assert_conforms("ErrorResponse", event)
        elif path == "/v1/completions":
            assert_conforms(event_schema, _finished(event))
        else:
            assert_conforms(event_schema, event)
    if path == "/v1/responses":
        assert numbers == sorted(set(numbers)), numbers
    return len(events)


def _finished(chunk: dict) -> dict:
    """A legacy completion's stream chunk as the document can check it: it describes only
    the whole answer, whose `finish_reason` a chunk leaves null until the last (as
    OpenAI's own chunks do); every other field is checked as it came."""
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason", "") is None:
            choice["finish_reason"] = "stop"
    return chunk


def _floats(answer: dict) -> dict:
    """Embeddings asked for as base64, decoded: the document describes only the floats
    (OpenAI's own base64 answers break it the same way)."""
    for item in answer.get("data") or ():
        if isinstance(item, dict) and isinstance(item.get("embedding"), str):
            packed = base64.b64decode(item["embedding"])
            item["embedding"] = list(struct.unpack(f"<{len(packed) // 4}f", packed))
    return answer


CHAT = {"messages": [{"role": "user", "content": "Weather in Lagos?"}]}
RESPONSES = {"input": "Weather in Lagos?", "instructions": "Be brief.", "max_output_tokens": 200}
ANSWERS = ["ok", "reasoning", "tool", "cut", "error"]


@pytest.mark.parametrize("how", ANSWERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_chat_completions_conform(server, http, upstream, how, stream):
    upstream.script(how)
    body = {"model": upstream.model, **CHAT, "tools": [CHAT_TOOL], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    status, kind, raw = send(server, http, "/v1/chat/completions", body)
    check("/v1/chat/completions", status, kind, raw)
    if upstream.kind == "responses_only":  # answered through the Responses API
        assert status == 200 or how in ("cut", "error"), raw
    if how == "cut" and stream:
        assert b'"upstream_stream_broken"' in raw or b"finish_reason" in raw


@pytest.mark.parametrize("how", ANSWERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_responses_conform(server, http, upstream, how, stream):
    upstream.script(how)
    body = {"model": upstream.model, **RESPONSES, "tools": [RESPONSES_TOOL], "stream": stream}
    body["user"] = "ada" if how == "ok" else None
    body["reasoning"] = {"effort": "low"} if how == "reasoning" else None
    status, kind, raw = send(server, http, "/v1/responses", body)
    check("/v1/responses", status, kind, raw)
    if stream and status == 200:
        last = json.loads(sse_events(raw)[-1][1])
        assert last["type"] in ("response.completed", "response.failed", "response.incomplete")
        made = last["response"]["id"] if last["type"] != "response.failed" else None
    else:
        made = json.loads(raw).get("id")
    kept = upstream.kind not in ("responses_api", "responses_only")  # kept here: read back
    if made and status == 200 and kept:
        status, kind, raw = send(server, http, f"/v1/responses/{made}")
        assert status == 200, raw
        check("/v1/responses", status, "application/json", raw)


def test_a_broken_responses_stream_ends_with_error_and_failed_events(server, http, upstream):
    upstream.script("cut")
    body = {"model": upstream.model, "input": "Say hello", "stream": True}
    status, kind, raw = send(server, http, "/v1/responses", body)
    assert status == 200
    check("/v1/responses", status, kind, raw)
    kinds = [name for name, _ in sse_events(raw)]
    assert kinds[-2:] == ["error", "response.failed"], kinds
    failed = json.loads(sse_events(raw)[-1][1])["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"


def test_embeddings_completions_and_models_conform(server, http, admin, fake):
    admin.add_key(OPENAI, fake.base_url, models=["gpt-4o-mini", "text-embedding-3-small", "m"])
    cases = [
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello"}),
        ("/v1/embeddings", {"model": "m", "input": ["a b", "c"], "encoding_format": "base64"}),
        ("/v1/embeddings", {"model": "m", "input": [[1, 2, 3]], "dimensions": 4}),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": "Once"}),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": ["a", "b"], "max_tokens": 9}),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": "Once", "stream": True}),
        (
            "/v1/completions",
            {"model": "m", "prompt": "x", "stream": True, "stream_options": {"include_usage": 1}},
        ),
    ]
    for path, body in cases:
        status, kind, raw = send(server, http, path, body)
        assert status == 200, raw
        check(path, status, kind, raw)
    status, _, raw = send(server, http, "/v1/models")
    assert status == 200
    assert_conforms("ListModelsResponse", json.loads(raw))
    model = json.loads(raw)["data"][0]["id"]
    status, _, raw = send(server, http, f"/v1/models/{model}")
    assert status == 200
    assert_conforms("Model", json.loads(raw))


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", {"model": "gpt-4o-mini"}),
        ("/v1/chat/completions", {"model": 3, "messages": []}),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": 7}),
        ("/v1/embeddings", {"model": "m", "input": {"a": 1}}),
        ("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": -1}),
        ("/v1/completions", {"model": "m"}),
        ("/v1/nothing-here", {}),
        ("/v1/models/not-a-model", None),
    ],
)
def test_error_bodies_conform(server, http, admin, fake, path, body):
    admin.add_key(OPENAI, fake.base_url)
    status, _, raw = send(server, http, path, body)
    assert 400 <= status < 500, raw
    assert_conforms("ErrorResponse", json.loads(raw))
    status, _, raw = send(server, http, path, body, key="sk-not-a-key")
    assert status in (401, 404), raw
    assert_conforms("ErrorResponse", json.loads(raw))


REQUESTS = [
    ("/v1/chat/completions", "CreateChatCompletionRequest"),
    ("/v1/responses", "CreateResponse"),
    ("/v1/embeddings", "CreateEmbeddingRequest"),
    ("/v1/completions", "CreateCompletionRequest"),
]


# Valid bodies KeyRelay once refused, beside the generated ones.
EDGES = {
    "/v1/chat/completions": [{"messages": [{"role": "user", "content": ""}], "max_tokens": 1}],
    "/v1/responses": [
        {"prompt": {"id": "pmpt_123", "variables": {"city": "Lagos"}}},
        {"input": [{"id": "msg_earlier"}, {"role": "user", "content": "and now?"}]},
        {"conversation": "conv_123", "input": "more"},
    ],
    "/v1/embeddings": [{"input": ""}, {"input": ["", "x"]}],
    "/v1/completions": [
        {"prompt": None},
        {"prompt": "Once", "max_tokens": 0, "echo": True, "logprobs": 1},
        {"prompt": ""},
    ],
}


def as_relayed(path: str, body: dict) -> dict:
    """The body as the upstream should get it: as it was sent, but for the one addition
    KeyRelay makes, a chat or completions stream's usage asked for (to book the request;
    the client still gets no usage chunk it did not ask for)."""
    if body.get("stream") is not True or path == "/v1/responses":
        return body
    asked = body.get("stream_options") or {}
    return {**body, "stream_options": {**asked, "include_usage": True}}


@pytest.mark.parametrize("path, name", REQUESTS)
def test_valid_requests_are_neither_refused_nor_altered(server, http, admin, fake, path, name):
    """Bodies built from the document's request schemas (each property's every kind),
    sent to an OpenAI key with the Responses API: each reaches the upstream as it was."""
    admin.add_key(OPENAI, fake.base_url, responses_api=True)
    refused, altered = [], []
    bodies = [{**body, "model": "gpt-4o-mini"} for body in requests(name) + EDGES[path]]
    if path != "/v1/embeddings":  # each streamed too
        bodies += [{**body, "stream": True} for body in bodies if "stream" not in body]
    for body in bodies:
        assert_conforms(name, body)
        before = len(fake.requests)
        status, _, raw = send(server, http, path, body)
        received = fake.requests[before:]
        if not received:
            refused.append(f"{status} {raw[:200]!r} for {json.dumps(body)[:300]}")
        elif received[-1].body != as_relayed(path, body):
            altered.append(f"sent {json.dumps(body)[:300]}, got {json.dumps(received[-1].body)}")
    assert len(bodies) > 10
    assert not refused, f"{len(refused)} of {len(bodies)} refused:\n" + "\n".join(refused)
    assert not altered, f"{len(altered)} of {len(bodies)} altered:\n" + "\n".join(altered)


def test_responses_without_input_need_a_key_with_the_responses_api(server, http, admin, fake):
    """A stored prompt stands for an input only OpenAI knows: a key translating to chat
    refuses it by name, and sends the upstream nothing."""
    admin.add_key(OPENAI, fake.base_url)
    body = {"model": "gpt-4o-mini", "prompt": {"id": "pmpt_123"}}
    status, _, raw = send(server, http, "/v1/responses", body)
    assert status == 400, raw
    assert_conforms("ErrorResponse", json.loads(raw))
    assert json.loads(raw)["error"]["param"] == "input"
    assert fake.requests == []


# -- Anthropic Messages against the SDK's types ------------------------------------------

MESSAGES_EVENT = TypeAdapter(RawMessageStreamEvent)
MESSAGES_TOOL = {"name": "get_weather", "input_schema": WEATHER}


def strictly(kind, raw: bytes) -> None:
    """Validate JSON as the SDK type `kind` (a model or a TypeAdapter) in strict mode: a
    missing required field or a null where the type has none fails, naming it."""
    try:
        if isinstance(kind, TypeAdapter):
            kind.validate_json(raw, strict=True)
        else:
            kind.model_validate_json(raw, strict=True)
    except ValidationError as broken:
        raise AssertionError(f"{broken}\n{raw[:2000]!r}") from None


def check_messages(status: int, kind: str, raw: bytes) -> None:
    """A /v1/messages answer, or each event of its stream, against the SDK's types."""
    if status >= 400:
        strictly(ErrorResponse, raw)
        return
    if not kind.startswith("text/event-stream"):
        strictly(Message, raw)
        return
    events = sse_events(raw)
    assert events and events[0][0] == "message_start", raw
    for name, data in events:
        assert name == json.loads(data)["type"], (name, data)
        if name == "error":
            strictly(ErrorResponse, data)
        elif name != "ping":
            strictly(MESSAGES_EVENT, data)


@pytest.mark.parametrize("how", ANSWERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_messages_conform_to_the_sdk_types(server, http, upstream, how, stream):
    upstream.script(how)
    body = {
        "model": upstream.model,
        "max_tokens": 300,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Weather in Lagos?"}],
        "tools": [MESSAGES_TOOL],
        "stream": stream,
    }
    if how == "reasoning":
        body["thinking"] = {"type": "enabled", "budget_tokens": 200}
    status, kind, raw = send(server, http, "/v1/messages", body)
    check_messages(status, kind, raw)
    if upstream.kind == "responses_only":  # answered through the Responses API
        assert status == 200 or how in ("cut", "error"), raw


@pytest.mark.parametrize(
    "body",
    [{"model": "m"}, {"model": "m", "max_tokens": 5, "messages": "hi"}, []],
    ids=["no-messages", "messages-a-string", "not-an-object"],
)
def test_messages_errors_conform_to_the_sdk_types(server, http, admin, fake, body):
    admin.add_key(OPENAI, fake.base_url)
    status, kind, raw = send(server, http, "/v1/messages", body)
    assert status == 400, raw
    check_messages(status, kind, raw)
    status, kind, raw = send(server, http, "/v1/messages", body, key="sk-not-a-key")
    assert status == 401, raw
    check_messages(status, kind, raw)


def test_an_unknown_path_names_every_endpoint_the_proxy_serves(server, http, app):
    served = sorted(
        f"{method} {rule.rule}"
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("proxy.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    )
    assert len(served) >= 9  # chat, embeddings, completions, responses, messages, models…
    for path in ("/v1/nothing-here", "/api/v1/chat/complete"):
        status, _, raw = send(server, http, path, {})
        assert status == 404, raw
        assert_conforms("ErrorResponse", json.loads(raw))
        message = json.loads(raw)["error"]["message"]
        for endpoint in served:  # <path:model_id> is written {model_id}
            assert endpoint.replace("<path:", "{").replace("<", "{").replace(">", "}") in message
    assert "POST /v1/responses" in message and "GET /v1/responses/{response_id}" in message


SEARCHED = [
    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT"},
    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
     "input": {"query": "Lagos weather"}},
    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
        {"type": "web_search_result", "url": "https://weather.example/lagos",
         "title": "Lagos", "encrypted_content": "enc-1", "page_age": None}]},
    {"type": "text", "text": "It is sunny in Lagos.", "citations": [
        {"type": "web_search_result_location", "url": "https://weather.example/lagos",
         "title": "Lagos", "cited_text": "Sunny, 31°C", "encrypted_index": "idx-1"}]},
    {"type": "text", "text": " As your file says.", "citations": [
        {"type": "char_location", "cited_text": "x", "document_index": 0,
         "document_title": None, "start_char_index": 0, "end_char_index": 1}]},
]  # fmt: skip


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_anthropic_web_search_answers_carry_their_citations_and_name_the_rest(
    server, http, admin, path
):
    """A web-search citation reaches a chat or Responses client as its URL citation; the
    server tool's blocks, the redacted thinking (chat) and a citation with no twin are
    named in x-keyrelay-ignored; the answer still conforms."""
    with FakeAnthropic([CLAUDE]) as claude:
        admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
        claude.script(CLAUDE, [ClaudeReply.of_blocks(SEARCHED)])
        if path == "/v1/responses":
            body = {"model": "claude-sonnet-4-5", "input": "Weather in Lagos?"}
        else:
            body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "?"}]}
        answer = http.request(
            "POST", server.url + path, json=body, headers={"Authorization": f"Bearer {MASTER_KEY}"}
        )
    assert answer.status == 200, answer.data
    check(path, 200, answer.headers["Content-Type"], answer.data)
    got = json.loads(answer.data)
    cited = {"type": "url_citation", "url": "https://weather.example/lagos", "title": "Lagos"}
    ignored = answer.headers["x-keyrelay-ignored"]
    if path == "/v1/responses":
        (message,) = [item for item in got["output"] if item["type"] == "message"]
        first = message["content"][0]
        assert first["annotations"] == [{**cited, "start_index": 0, "end_index": 21}]
        (reasoning,) = [item for item in got["output"] if item["type"] == "reasoning"]
        assert reasoning["encrypted_content"] == SEARCHED[0]["data"]  # its twin
        assert ignored == "server_tool_use, web_search_tool_result, citations (char_location)"
    else:
        message = got["choices"][0]["message"]
        assert message["content"] == "It is sunny in Lagos. As your file says."
        span = {"start_index": 0, "end_index": 21}
        assert message["annotations"] == [{"type": "url_citation", "url_citation": {
            "url": cited["url"], "title": "Lagos", **span}}]  # fmt: skip
        assert ignored == (
            "redacted_thinking, server_tool_use, web_search_tool_result, citations (char_location)"
        )

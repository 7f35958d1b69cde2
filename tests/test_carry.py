"""Every request field is carried, emulated or refused by name, per provider: the official
SDKs through KeyRelay to fake Anthropic, Gemini and OpenAI-format upstreams, asserting
what the upstream received and what the client got. A field a key's provider cannot carry
is a 400 `unsupported_by_provider` naming it (and the upstream is never called); in a
mixed pool a key that carries it serves instead, and the key that could not is not
blamed. Also: a tool call whose upstream says finish_reason `stop` is a `tool_use` turn,
and the README's table is the providers' declarations."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from gateway.providers import ADAPTERS
from gateway.providers.carry import table
from tests.fake_anthropic import FakeAnthropic
from tests.fake_anthropic import Reply as ClaudeReply
from tests.fake_gemini import FakeGemini
from tests.fake_gemini import Reply as GeminiReply
from tests.fake_upstream import Behaviour

CLAUDE = "sk-ant-api03-carry-aaaaaaaaaaaaaaaaaaaa"
GEMINI = "AIzaSyFakeCarry-aaaaaaaaaaaaaaaaaaaaaaaaaa"
OPENAI = "sk-openai-carry-aaaaaaaaaaaaaaaa"
SONNET = "claude-sonnet-4-5"
FLASH = "gemini-2.5-flash"
HI = [{"role": "user", "content": "Hi"}]
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "place", "schema": CITY, "strict": True},
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": CITY},
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
PDF = "data:application/pdf;base64,JVBERi0xLjQKJcfsj6IK"


@pytest.fixture
def claude(admin):
    with FakeAnthropic([CLAUDE]) as fake:
        admin.add_key(CLAUDE, fake.base_url, provider="anthropic", name="claude")
        yield fake


@pytest.fixture
def gemini(admin):
    with FakeGemini([GEMINI]) as fake:
        admin.add_key(GEMINI, fake.base_url, provider="gemini", name="gemini")
        yield fake


def refused(call) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.status_code == 400
    assert caught.value.code == "unsupported_by_provider"
    return caught.value


# -- refused by name --------------------------------------------------------------------

AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
ANTHROPIC_REFUSALS = [
    ({"n": 2}, "n"),
    ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ({"seed": 7}, "seed"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"prediction": {"type": "content", "content": "Hi"}}, "prediction"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"verbosity": "low"}, "verbosity"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "array"}},
            }
        },
        "response_format.json_schema.schema",
    ),  # fmt: skip
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}, AUDIO]}]},
        "messages[0].content[1]",
    ),  # fmt: skip
    (
        {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]},
        "messages[0].content[0].file.file_id",
    ),
]


@pytest.mark.parametrize(("fields", "param"), ANTHROPIC_REFUSALS)
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_refuses_what_it_cannot_carry_by_name(client, claude, fields, param, stream):
    body = {"model": SONNET, "messages": HI, **fields}
    if stream:
        body["stream"] = True
    error = refused(lambda: client.chat.completions.create(**body))
    assert error.param == param
    assert f"'{param}'" in error.message and "'anthropic'" in error.message
    assert claude.messages_requests == []  # refused before any call


GEMINI_REFUSALS = [
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"modalities": ["audio"], "audio": {"voice": "alloy"}}, "modalities"),
    ({"prediction": {"type": "content", "content": "Hi"}}, "prediction"),
    (
        {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]},
        "messages[0].content[0].file.file_id",
    ),
]


@pytest.mark.parametrize(("fields", "param"), GEMINI_REFUSALS)
def test_gemini_refuses_what_it_cannot_carry_by_name(client, gemini, fields, param):
    error = refused(
        lambda: client.chat.completions.create(**{"model": FLASH, "messages": HI, **fields})
    )
    assert error.param == param and "'gemini'" in error.message
    assert gemini.requests == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"functions": "get_weather"}, "functions"),
     ({"functions": [{"description": "no name"}]}, "functions[0].name"),
     ({"function_call": 7}, "function_call")],
)  # fmt: skip
def test_malformed_legacy_functions_are_refused_at_the_edge(client, claude, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=SONNET, messages=HI, **fields)
    assert caught.value.code != "unsupported_by_provider" and caught.value.param == param
    assert claude.messages_requests == []


def test_a_mixed_pool_serves_a_field_from_the_key_that_carries_it(
    client, claude, fake, admin, server
):
    """n=2 in a pool of an Anthropic and an OpenAI-format key: the OpenAI key serves every
    time; the Anthropic key is passed over without a call and without blame."""
    admin.add_key(OPENAI, fake.base_url, name="openai")
    for _ in range(4):
        completion = client.chat.completions.create(model=SONNET, messages=HI, n=2)
        assert completion.choices[0].message.content
    assert claude.messages_requests == []
    assert [r.body["n"] for r in fake.requests] == [2] * 4
    keys = {k["name"]: k for k in admin.call("GET", "/keys").json()["data"]}
    assert keys["claude"]["status"] == "active"
    assert keys["claude"]["consecutive_failures"] == 0 and keys["claude"]["last_error"] is None
    server.app.extensions["keyrelay"].books.flush()
    assert [row["status_code"] for row in admin.logs()] == [200] * 4


def test_a_route_falls_back_to_a_model_whose_keys_carry_the_field(client, claude, fake, admin):
    """A route whose first model's keys cannot carry `n` goes on to its fallback model,
    whose key can; with no such fallback the refusal answers, naming the field."""
    admin.add_key(OPENAI, fake.base_url, name="openai", models=["gpt-4o-mini"])
    body = {"name": "smart", "target": SONNET, "fallbacks": ["gpt-4o-mini"]}
    assert admin.call("POST", "/routes", body).status == 201
    completion = client.chat.completions.create(model="smart", messages=HI, n=2)
    assert completion.choices[0].message.content
    assert claude.messages_requests == []
    assert [(r.body["model"], r.body["n"]) for r in fake.requests] == [("gpt-4o-mini", 2)]
    # A fallback no key serves says less than the refusal: the refusal answers.
    body = {"name": "lonely", "target": SONNET, "fallbacks": ["gpt-5-nowhere"]}
    assert admin.call("POST", "/routes", body).status == 201
    error = refused(lambda: client.chat.completions.create(model="lonely", messages=HI, n=2))
    assert error.param == "n"
    assert claude.messages_requests == [] and len(fake.requests) == 1


def test_a_key_passed_over_for_a_field_takes_no_place_in_its_rpm_window(client, fake, admin, clock):
    """A key that cannot carry `n` is passed over before it counts the request against
    its RPM: after two such requests, alone in the pool, it still serves one."""
    with FakeAnthropic([CLAUDE]) as claude:
        limited = admin.add_key(CLAUDE, claude.base_url, provider="anthropic", name="claude",
                                rpm_limit=1)  # fmt: skip
        other = admin.add_key(OPENAI, fake.base_url, name="openai")
        for _ in range(2):
            client.chat.completions.create(model=SONNET, messages=HI, n=2)
        assert claude.messages_requests == [] and len(fake.requests) == 2
        admin.call("DELETE", f"/keys/{other['id']}")
        completion = client.chat.completions.create(model=SONNET, messages=HI)
        assert completion.choices[0].message.content
        assert len(claude.messages_requests) == 1
        assert admin.key(limited["id"])["status"] == "active"


# -- emulated: structured output, legacy functions, allowed tools -------------------------


def test_json_schema_is_a_forced_tool_on_anthropic(client, claude):
    claude.script(CLAUDE, [ClaudeReply.tool_use("json_answer", {"city": "Paris"})])
    completion = client.chat.completions.create(
        model=SONNET, messages=HI, response_format=SCHEMA_FORMAT
    )
    choice = completion.choices[0]
    assert json.loads(choice.message.content) == {"city": "Paris"}
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    (sent,) = claude.messages_requests
    assert sent.body["tools"] == [
        {"name": "json_answer", "description": sent.body["tools"][0]["description"],
         "input_schema": CITY}
    ]  # fmt: skip
    assert sent.body["tool_choice"] == {"type": "tool", "name": "json_answer"}


def test_json_mode_streamed_from_anthropic_is_the_answer_text(client, claude):
    claude.script(CLAUDE, [ClaudeReply.tool_use("json_answer", {"city": "Paris", "n": 1})])
    stream = client.chat.completions.create(
        model=SONNET, messages=HI, response_format={"type": "json_object"}, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"city": "Paris", "n": 1}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    (sent,) = claude.messages_requests
    assert sent.body["tools"][0]["input_schema"] == {"type": "object"}


def test_json_schema_beside_tools_lets_the_model_pick_one(client, claude):
    client.chat.completions.create(
        model=SONNET, messages=HI, response_format=SCHEMA_FORMAT, tools=[WEATHER]
    )
    (sent,) = claude.messages_requests
    assert [t["name"] for t in sent.body["tools"]] == ["get_weather", "json_answer"]
    assert sent.body["tool_choice"] == {"type": "any"}


def test_legacy_functions_reach_anthropic_and_come_back_as_function_call(client, claude):
    claude.script(CLAUDE, [ClaudeReply.tool_use("get_weather", {"city": "Oslo"})])
    completion = client.chat.completions.create(
        model=SONNET,
        messages=HI,
        functions=[WEATHER["function"]],
        function_call={"name": "get_weather"},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call.name == "get_weather"
    assert json.loads(choice.message.function_call.arguments) == {"city": "Oslo"}
    assert choice.message.tool_calls is None
    (sent,) = claude.messages_requests
    assert sent.body["tools"][0]["name"] == "get_weather"
    assert sent.body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    # The legacy turns (a function_call and its function result) go up as tool turns.
    client.chat.completions.create(
        model=SONNET,
        messages=[
            *HI,
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            },
            {"role": "function", "name": "get_weather", "content": "sunny"},
        ],  # fmt: skip
        functions=[WEATHER["function"]],
    )
    turns = claude.messages_requests[1].body["messages"]
    call = turns[1]["content"][0]
    assert call["type"] == "tool_use" and call["input"] == {"city": "Oslo"}
    assert turns[2]["content"][0] == {
        "type": "tool_result", "tool_use_id": call["id"], "content": "sunny"
    }  # fmt: skip


def test_legacy_functions_stream_from_gemini_as_function_call(client, gemini):
    gemini.script(GEMINI, [GeminiReply.function_call("get_weather", {"city": "Oslo"})])
    stream = client.chat.completions.create(
        model=FLASH, messages=HI, functions=[WEATHER["function"]], stream=True
    )
    chunks = [c for c in stream if c.choices]
    calls = [c.choices[0].delta.function_call for c in chunks if c.choices[0].delta.function_call]
    assert calls[0].name == "get_weather"
    assert json.loads("".join(c.arguments or "" for c in calls)) == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "function_call"
    assert not any(c.choices[0].delta.tool_calls for c in chunks)


def test_allowed_tools_restrict_what_anthropic_is_offered(client, claude):
    client.chat.completions.create(
        model=SONNET,
        messages=HI,
        tools=[WEATHER, TIME],
        tool_choice={
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [TIME]},
        },
    )
    (sent,) = claude.messages_requests
    assert [t["name"] for t in sent.body["tools"]] == ["get_time"]
    assert sent.body["tool_choice"] == {"type": "any"}


# -- carried: files, audio, log probabilities, one call at a time --------------------------


def test_a_pdf_part_is_a_document_on_anthropic_and_inline_data_on_gemini(client, claude, gemini):
    content = [{"type": "text", "text": "Sum it up"},
               {"type": "file", "file": {"filename": "a.pdf", "file_data": PDF}}]  # fmt: skip
    client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": content}])
    blocks = claude.messages_requests[0].body["messages"][0]["content"]
    assert blocks[1] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF.split(",")[1]},
        "title": "a.pdf",  # the file's name, as the document's title
    }
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    client.chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": [*content, audio]}]
    )
    parts = gemini.calls()[0].body["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "application/pdf", "data": PDF.split(",")[1]}}
    assert parts[2] == {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}}


def test_logprobs_are_carried_by_gemini(client, gemini):
    gemini.script(GEMINI, [GeminiReply.ok("Hello there")])
    completion = client.chat.completions.create(
        model=FLASH, messages=HI, logprobs=True, top_logprobs=2
    )
    config = gemini.calls()[0].body["generationConfig"]
    assert config["responseLogprobs"] is True and config["logprobs"] == 2
    content = completion.choices[0].logprobs.content
    assert [t.token for t in content] == ["Hello", " there"]
    assert all(t.logprob == -0.5 and len(t.top_logprobs) == 3 for t in content)


def test_logprobs_stream_from_gemini(client, gemini):
    gemini.script(GEMINI, [GeminiReply.ok("Hello there")])
    stream = client.chat.completions.create(
        model=FLASH, messages=HI, logprobs=True, top_logprobs=1, stream=True
    )
    tokens = [
        entry
        for chunk in stream
        if chunk.choices and chunk.choices[0].logprobs
        for entry in chunk.choices[0].logprobs.content
    ]
    assert [t.token for t in tokens] == ["Hello", " there"]
    assert [len(t.top_logprobs) for t in tokens] == [2, 2]


def test_one_call_at_a_time_keeps_geminis_first_call(client, gemini):
    two = GeminiReply("function_call", "", calls=[("get_weather", {"city": "A"}),
                                                  ("get_time", {})])  # fmt: skip
    gemini.script(GEMINI, [two, two])
    together = client.chat.completions.create(model=FLASH, messages=HI, tools=[WEATHER, TIME])
    assert len(together.choices[0].message.tool_calls) == 2
    one = client.chat.completions.create(
        model=FLASH, messages=HI, tools=[WEATHER, TIME], parallel_tool_calls=False
    )
    (call,) = one.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert one.choices[0].finish_reason == "tool_calls"


def test_json_schema_is_geminis_response_schema(client, gemini):
    client.chat.completions.create(model=FLASH, messages=HI, response_format=SCHEMA_FORMAT)
    config = gemini.calls()[0].body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == CITY


# -- a tool call the upstream ends with finish_reason "stop" ------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_with_finish_reason_stop_are_a_tool_use_turn(messages_sdk, admin, fake, stream):
    admin.add_key(OPENAI, fake.base_url, name="litellm-like")
    fake.script(OPENAI, [Behaviour.tool_call("get_weather", {"city": "Oslo"}, finish="stop")])
    tool = {"name": "get_weather", "input_schema": CITY}
    asked = {"model": "gpt-4o-mini", "max_tokens": 100, "messages": HI, "tools": [tool]}
    if stream:
        with messages_sdk.messages.stream(**asked) as events:
            message = events.get_final_message()
    else:
        message = messages_sdk.messages.create(**asked)
    assert message.stop_reason == "tool_use"
    (block,) = [b for b in message.content if b.type == "tool_use"]
    assert block.name == "get_weather" and block.input == {"city": "Oslo"}


# -- Responses: what the chat form carries, and what only the Responses API can ---------


def test_responses_text_format_is_carried_and_echoed(client, claude):
    claude.script(CLAUDE, [ClaudeReply.tool_use("json_answer", {"city": "Rome"})])
    fmt = {"type": "json_schema", "name": "place", "schema": CITY, "strict": True}
    response = client.responses.create(model=SONNET, input="Where?", text={"format": fmt})
    assert json.loads(response.output_text) == {"city": "Rome"}
    assert response.text.format.type == "json_schema" and response.text.format.name == "place"
    (sent,) = claude.messages_requests
    assert sent.body["tools"][0]["input_schema"] == CITY
    assert sent.body["tool_choice"] == {"type": "tool", "name": "json_answer"}


def test_responses_cache_key_and_allowed_tools_reach_a_chat_upstream(client, admin, fake):
    admin.add_key(OPENAI, fake.base_url, name="chat-only")
    tools = [{"type": "function", "name": n, "parameters": {"type": "object"}}
             for n in ("get_weather", "get_time")]  # fmt: skip
    client.responses.create(
        model="gpt-4o-mini",
        input="Hi",
        tools=tools,
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "get_time"}],
        },  # fmt: skip
        prompt_cache_key="session-42",
        include=["reasoning.encrypted_content"],
    )
    (sent,) = fake.requests
    assert sent.body["prompt_cache_key"] == "session-42"
    assert [t["function"]["name"] for t in sent.body["tools"]] == ["get_time"]
    assert sent.body["tool_choice"] == "required"


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"conversation": "conv_123"}, "conversation"),
     ({"include": ["message.output_text.logprobs"]}, "include[0]")],
)  # fmt: skip
def test_responses_fields_only_the_responses_api_carries_are_refused(
    client, admin, fake, fields, param
):
    admin.add_key(OPENAI, fake.base_url, name="chat-only")
    error = refused(lambda: client.responses.create(model="gpt-4o-mini", input="Hi", **fields))
    assert error.param == param and "'openai'" in error.message
    assert fake.requests == []


def test_a_responses_api_key_carries_the_conversation(client, admin, fake):
    admin.add_key(OPENAI, fake.base_url, name="responses", responses_api=True)
    client.responses.create(model="gpt-4o-mini", input="Hi", conversation="conv_123")
    (sent,) = fake.requests
    assert sent.path == "/v1/responses" and sent.body["conversation"] == "conv_123"


# -- the README's table ------------------------------------------------------------------


def test_the_readme_table_is_the_providers_declarations():
    readme = (Path(__file__).parent.parent / "docs" / "request-fields.md").read_text()
    assert table(ADAPTERS) in readme


@pytest.mark.parametrize("stream", [False, True])
def test_built_in_responses_tools_a_chat_key_goes_without_are_named_in_a_header(
    client, admin, fake, stream
):
    """Codex offers web search on every request: a key that translates to chat cannot
    carry it; the request is served, and the answer says what was left out."""
    admin.add_key(OPENAI, fake.base_url, name="chat-only")
    tools = [
        {"type": "function", "name": "f", "parameters": {"type": "object"}},
        {"type": "web_search"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
    ]
    raw = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input="Hi", tools=tools, stream=stream
    )
    assert raw.headers["x-keyrelay-ignored"] == "tools[1] (web_search), tools[2] (file_search)"
    raw.parse()
    (sent,) = fake.requests
    assert [tool["function"]["name"] for tool in sent.body["tools"]] == ["f"]


def test_a_responses_api_key_carries_built_in_tools_and_nothing_is_ignored(client, admin, fake):
    admin.add_key(OPENAI, fake.base_url, name="responses", responses_api=True)
    raw = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input="Hi", tools=[{"type": "web_search"}]
    )
    assert "x-keyrelay-ignored" not in raw.headers
    (sent,) = fake.requests
    assert sent.path == "/v1/responses" and sent.body["tools"] == [{"type": "web_search"}]

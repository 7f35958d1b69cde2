"""Anthropic Messages (`/v1/messages`) through the official `anthropic` SDK, served by a
pool that holds only an OpenAI-format upstream: the request and the answer translated,
streams as the exact Messages event sequence, tool use round trips, errors in Anthropic's
shape."""

from __future__ import annotations

import json

import anthropic
import pytest

from tests.conftest import MASTER_KEY
from tests.fake_upstream import TOOL_CALL_ID, Behaviour, count_prompt_tokens

SECRET = "sk-anthropic-dialect-aaaaaaaa"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def key(admin, fake):
    return admin.add_key(SECRET, fake.base_url)


@pytest.fixture
def sdk(server):
    client = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    yield client
    client.close()


def test_create_is_translated_both_ways(sdk, key, fake, admin, server):
    message = sdk.messages.create(
        model="gpt-4o-mini",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello"}],
        stop_sequences=["END"],
        extra_body={"temperature": 0.2},
        metadata={"user_id": "user-7"},
    )
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello from the fake upstream"
    assert message.stop_reason == "end_turn"
    reported = fake.usage_reported[0]
    assert message.usage.input_tokens == reported["prompt_tokens"]
    assert message.usage.output_tokens == reported["completion_tokens"]
    (sent,) = fake.requests
    assert sent.path == "/v1/chat/completions" and sent.secret == SECRET
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent.body["max_tokens"] == 100 and sent.body["stop"] == ["END"]
    assert sent.body["temperature"] == 0.2 and sent.body["user"] == "user-7"
    server.app.extensions["keyrelay"].books.flush()
    (row,) = admin.logs()
    assert row["endpoint"] == "messages" and row["status_code"] == 200
    assert row["total_tokens"] == reported["total_tokens"]


def test_stream_is_the_exact_messages_event_sequence(sdk, key, fake):
    with sdk.messages.stream(
        model="gpt-4o-mini", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [event.type for event in events]
    # The SDK adds its own `text` events beside the raw ones; the raw ones in order:
    raw = [k for k in kinds if k in RAW_EVENTS]
    assert raw[0] == "message_start"
    assert raw[1] == "content_block_start"
    assert raw[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[0].message
    assert start.usage.input_tokens > 0  # usage in message_start, counted locally
    assert final.content[0].text == "Hello from the fake upstream"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == fake.usage_reported[0]["completion_tokens"]


RAW_EVENTS = {
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
}


def test_raw_stream_bytes_name_each_event_and_index_blocks(server, http, key, fake):
    fake.set_behaviour(SECRET, Behaviour.tool_call("get_weather", {"city": "Lagos"}, "Let me see."))
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 50,
        "stream": True,
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": "Weather in Lagos?"}],
    }
    response = http.request(
        "POST",
        f"{server.url}/v1/messages?beta=true",
        body=json.dumps(body).encode(),
        headers={
            "x-api-key": MASTER_KEY,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "some-future-flag-2099-01-01,another-unknown-flag",
            "content-type": "application/json",
        },
    )
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.data.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = block.split("\n", 1)
        assert name.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[6:])
        assert payload["type"] == name[7:]  # the event line names the data's type
        events.append(payload)
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    text_start, tool_start = (e for e in events if e["type"] == "content_block_start")
    assert text_start["index"] == 0 and text_start["content_block"]["type"] == "text"
    assert tool_start["index"] == 1
    assert tool_start["content_block"] == {
        "type": "tool_use",
        "id": TOOL_CALL_ID,
        "name": "get_weather",
        "input": {},
    }
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert stops == [0, 1]  # the text block closed before the tool block opened
    pieces = [
        e["delta"]["partial_json"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    ]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == {"city": "Lagos"}
    assert all(e["index"] == 1 for e in events if e.get("delta", {}).get("partial_json"))
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == fake.usage_reported[0]["completion_tokens"]
    assert kinds[-1] == "message_stop"


def test_tool_use_round_trip(sdk, key, fake):
    fake.script(
        SECRET,
        [Behaviour.tool_call("get_weather", {"city": "Lagos"}), Behaviour.ok("It is sunny.")],
    )
    messages = [{"role": "user", "content": "Weather in Lagos?"}]
    first = sdk.messages.create(
        model="gpt-4o-mini", max_tokens=100, tools=[WEATHER], messages=messages
    )
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "Lagos"}
    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "31 C, sunny"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    final = sdk.messages.create(
        model="gpt-4o-mini", max_tokens=100, tools=[WEATHER], messages=messages
    )
    assert final.content[0].text == "It is sunny."
    sent = fake.requests[1].body
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "The weather in a city.",
            },
        }
    ]
    assistant, tool, user = sent["messages"][1:]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Lagos"}',
    }
    assert tool == {"role": "tool", "tool_call_id": call.id, "content": "31 C, sunny"}
    assert user == {"role": "user", "content": "And tomorrow?"}


def test_streamed_tool_use_round_trip_with_the_sdk(sdk, key, fake):
    fake.set_behaviour(SECRET, Behaviour.tool_call("get_weather", {"city": "Abuja"}))
    with sdk.messages.stream(
        model="gpt-4o-mini",
        max_tokens=100,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather?"}],
    ) as stream:
        final = stream.get_final_message()
    (call,) = final.content
    assert call.type == "tool_use" and call.input == {"city": "Abuja"}  # never empty
    assert fake.requests[0].body["tool_choice"] == "required"


def test_images_and_system_blocks(sdk, key, fake):
    sdk.messages.create(
        model="gpt-4o-mini",
        max_tokens=10,
        system=[{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"},
                    },
                    {"type": "text", "text": "What is this?"},
                ],
            }
        ],
    )
    system, user = fake.requests[0].body["messages"]
    assert system == {"role": "system", "content": "One.\nTwo."}
    assert user["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "text", "text": "What is this?"},
    ]


@pytest.mark.parametrize(
    ("model", "thinking", "effort"),
    [
        ("o4-mini", {"type": "enabled", "budget_tokens": 2048}, "low"),
        ("o4-mini", {"type": "enabled", "budget_tokens": 10000}, "medium"),
        ("gpt-5", {"type": "enabled", "budget_tokens": 32000}, "high"),
        ("gpt-4o-mini", {"type": "enabled", "budget_tokens": 32000}, None),  # takes none
    ],
)
def test_thinking_becomes_a_reasoning_effort_where_the_model_takes_it(
    sdk, key, fake, model, thinking, effort
):
    sdk.messages.create(
        model=model,
        max_tokens=4000,
        thinking=thinking,
        messages=[{"role": "user", "content": "Think."}],
    )
    assert fake.requests[0].body.get("reasoning_effort") == effort


def test_reasoning_comes_back_as_a_thinking_block_before_the_text(server, http, key, fake):
    """LiteLLM drops the first text delta after a thinking block (#30765): not here."""
    fake.set_behaviour(SECRET, Behaviour.ok("Answer after thought", reasoning="Let me think"))
    body = {
        "model": "o4-mini",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "?"}],
    }
    response = http.request(
        "POST",
        f"{server.url}/v1/messages",
        body=json.dumps(body).encode(),
        headers={"x-api-key": MASTER_KEY, "content-type": "application/json"},
    )
    events = [
        json.loads(b.split("\ndata: ", 1)[1]) for b in response.data.decode().split("\n\n") if b
    ]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["thinking", "text"]
    assert [s["index"] for s in starts] == [0, 1]
    thought = "".join(
        e["delta"]["thinking"] for e in events if e.get("delta", {}).get("type") == "thinking_delta"
    )
    text = "".join(
        e["delta"]["text"] for e in events if e.get("delta", {}).get("type") == "text_delta"
    )
    assert thought == "Let me think" and text == "Answer after thought"


def test_count_tokens(sdk, key):
    counted = sdk.messages.count_tokens(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    assert counted.input_tokens > 3
    more = sdk.messages.count_tokens(
        model="gpt-4o-mini",
        tools=[WEATHER],
        messages=[{"role": "user", "content": "hello there"}],
    )
    assert more.input_tokens > counted.input_tokens


def test_errors_come_in_anthropic_shape(sdk, server, key, fake):
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(model="gpt-4o-mini", max_tokens=0, messages=[])
    assert bad.value.body["type"] == "error"
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    wrong = anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        wrong.messages.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    wrong.close()
    assert denied.value.body["error"]["type"] == "authentication_error"
    fake.set_behaviour(SECRET, Behaviour.server_error(503))
    with pytest.raises(anthropic.APIStatusError) as failed:
        sdk.messages.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert failed.value.status_code in (502, 503)
    assert failed.value.body["type"] == "error"
    fake.set_behaviour(SECRET, Behaviour.bad_request("context too long", status=400))
    with pytest.raises(anthropic.BadRequestError) as rejected:
        sdk.messages.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert rejected.value.body["error"]["message"] == "context too long"


def test_bearer_auth_and_client_keys_work_too(server, admin, key, fake):
    created = admin.call("POST", "/client-keys", {"name": "claude", "rpm_limit": 5}).json()
    client = anthropic.Anthropic(
        base_url=server.url, auth_token=created["key"], api_key=None, max_retries=0
    )
    message = client.messages.create(
        model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    client.close()
    assert message.content[0].text == "Hello from the fake upstream"
    assert fake.requests[0].body["messages"] == [{"role": "user", "content": "hi"}]
    assert count_prompt_tokens(fake.requests[0].body["messages"]) > 0


def test_server_tools_an_openai_format_key_goes_without_are_named_in_a_header(sdk, key, fake):
    """Chat has no server tools: the request is served with the client's own tools, and
    the answer names what was left out."""
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
    raw = sdk.messages.with_raw_response.create(
        model="gpt-4o-mini",
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER, search],
    )
    assert raw.headers["x-keyrelay-ignored"] == "tools[1] (web_search_20250305)"
    assert raw.parse().content
    (sent,) = fake.requests
    assert [tool["function"]["name"] for tool in sent.body["tools"]] == ["get_weather"]


def test_an_anthropic_request_reaches_an_openai_key_as_the_chat_body_it_implies(sdk, key, fake):
    """Decoded once into the internal request, encoded once as OpenAI chat: thinking as
    the reasoning model's effort, its answer cap in `max_completion_tokens`, top-k and
    cache marks carried, tools and the tool choice as chat's own."""
    sdk.messages.create(
        model="o4-mini",
        max_tokens=4000,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        thinking={"type": "enabled", "budget_tokens": 2048},
        extra_body={"top_k": 40},
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        metadata={"user_id": "user-7"},
    )
    assert fake.requests[0].body == {
        "model": "o4-mini",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief.",
                                            "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "Weather in Oslo?"},
        ],
        "max_completion_tokens": 4000,
        "top_k": 40,
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": WEATHER["description"],
            "parameters": WEATHER["input_schema"]}}],
        "parallel_tool_calls": False,
        "tool_choice": "required",
        "reasoning_effort": "low",
        "user": "user-7",
    }  # fmt: skip

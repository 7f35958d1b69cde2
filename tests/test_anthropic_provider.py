"""Provider kind `anthropic` (Anthropic's native Messages API) behind every client
dialect: OpenAI chat and Responses translated, Anthropic Messages passed through; tools,
streams, prompt-caching usage booked and priced, 529 and 429 failing over, model
discovery. The upstream is a fake that speaks the Messages wire protocol."""

from __future__ import annotations

import json
from decimal import Decimal

import anthropic
import openai
import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from tests.conftest import MASTER_KEY
from tests.fake_anthropic import DEFAULT_TEXT, MODELS, TOOL_USE_ID, FakeAnthropic, Reply
from tests.fake_upstream import Behaviour

CLAUDE = "sk-ant-api03-aaaaaaaaaaaaaaaaaaaaaaaa"
SPARE = "sk-ant-api03-bbbbbbbbbbbbbbbbbbbbbbbb"
OPENAI = "sk-openai-for-failover-aaaaaa"
MODEL = "claude-sonnet-4-5"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def claude():
    with FakeAnthropic([CLAUDE, SPARE]) as fake:
        yield fake


@pytest.fixture
def key(admin, claude):
    return admin.add_key(CLAUDE, claude.base_url, provider="anthropic", name="claude")


@pytest.fixture
def messages_sdk(server):
    client = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    yield client
    client.close()


def logged(server, admin) -> list[dict]:
    server.app.extensions["keyrelay"].books.flush()
    return admin.logs()


def test_openai_chat_is_translated_to_messages_and_back(client, key, claude, server, admin):
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        temperature=0.1,
        stop=["END"],
    )
    assert completion.choices[0].message.content == DEFAULT_TEXT
    assert completion.choices[0].finish_reason == "stop"
    (sent,) = claude.messages_requests
    assert sent.key == CLAUDE and sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers  # the secret goes in x-api-key only
    assert sent.body["system"] == "Be brief."
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}
    ]
    assert sent.body["max_tokens"] == 4096 and sent.body["stop_sequences"] == ["END"]
    reported = claude.usage_reported[0]
    assert completion.usage.prompt_tokens == reported["input_tokens"]
    assert completion.usage.completion_tokens == reported["output_tokens"]
    (row,) = logged(server, admin)
    assert row["provider"] == "anthropic" and row["total_tokens"] == completion.usage.total_tokens


@pytest.mark.both_databases
def test_prompt_caching_usage_is_booked_and_priced(client, key, claude, server, admin):
    claude.script(CLAUDE, [Reply.ok(cache_creation=1200, cache_read=3400)])
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Use the cache"}]
    )
    reported = claude.usage_reported[0]
    prompt = reported["input_tokens"] + 1200 + 3400  # every prompt token, cached or not
    assert completion.usage.prompt_tokens == prompt
    assert completion.usage.prompt_tokens_details.cached_tokens == 3400
    (row,) = logged(server, admin)
    assert (row["cache_write_tokens"], row["cache_read_tokens"]) == (1200, 3400)
    expected = calc_price(
        PriceUsage(
            input_tokens=prompt,
            cache_write_tokens=1200,
            cache_read_tokens=3400,
            output_tokens=reported["output_tokens"],
        ),
        MODEL,
        provider_id="anthropic",
    ).total_price
    micros = (expected * 1_000_000).quantize(Decimal(1))
    assert Decimal(row["cost_usd"]) * 1_000_000 == micros
    plain = calc_price(
        PriceUsage(input_tokens=prompt, output_tokens=reported["output_tokens"]),
        MODEL,
        provider_id="anthropic",
    ).total_price
    assert expected != plain  # the cache was priced apart


def test_openai_stream_and_tool_round_trip(client, key, claude):
    claude.script(CLAUDE, [Reply.tool_use("get_weather", {"city": "Lagos"}, text="Checking.")])
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Weather in Lagos?"}],
            tools=[WEATHER],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Checking."
    calls = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert calls[0].id == TOOL_USE_ID and calls[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in calls)
    assert json.loads(arguments) == {"city": "Lagos"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens == claude.usage_reported[0]["output_tokens"]
    sent = claude.messages_requests[0].body
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER["function"]["parameters"],
            "description": "The weather in a city.",
        }
    ]
    # The result goes back as a tool_result block the fake checks against its tool_use.
    final = client.chat.completions.create(
        model=MODEL,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Lagos?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": TOOL_USE_ID,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": TOOL_USE_ID, "content": "31 C"},
        ],
    )
    assert final.choices[0].message.content == DEFAULT_TEXT
    user_turn = claude.messages_requests[1].body["messages"][2]
    assert user_turn == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": TOOL_USE_ID, "content": "31 C"}],
    }


def test_anthropic_clients_get_passthrough(messages_sdk, key, claude, server, admin):
    body = {
        "model": MODEL,
        "max_tokens": 2000,  # more than the thinking budget, as the API requires
        "system": [{"type": "text", "text": "Cached.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    claude.script(CLAUDE, [Reply.ok(thinking="Pondering", cache_read=50)])
    message = messages_sdk.messages.create(**body)
    sent = claude.messages_requests[0].body
    assert sent == body  # the client's own body, untouched
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == DEFAULT_TEXT
    assert message.usage.cache_read_input_tokens == 50
    with messages_sdk.messages.stream(**body) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[-1].text == DEFAULT_TEXT
    assert "message_start" in kinds and kinds[-1] == "message_stop"
    rows = logged(server, admin)
    assert [r["endpoint"] for r in rows] == ["messages", "messages"]
    assert all(r["provider"] == "anthropic" and not r["usage_estimated"] for r in rows)


def test_responses_api_reaches_anthropic(client, key, claude):
    response = client.responses.create(model=MODEL, input="Say hello", instructions="Brief.")
    assert response.output_text == DEFAULT_TEXT
    sent = claude.messages_requests[0].body
    assert sent["system"] == "Brief."
    events = list(client.responses.create(model=MODEL, input="again", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == DEFAULT_TEXT


def test_overloaded_fails_over_to_the_next_key(client, admin, claude):
    admin.add_key(CLAUDE, claude.base_url, provider="anthropic", name="first")
    admin.add_key(SPARE, claude.base_url, provider="anthropic", name="second")
    claude.script(CLAUDE, [Reply.overloaded()])
    answer = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.parse().choices[0].message.content == DEFAULT_TEXT
    assert answer.headers["x-keyrelay-attempts"] == "2"
    assert [r.key for r in claude.messages_requests] == [CLAUDE, SPARE]


@pytest.mark.both_databases
def test_retry_after_of_a_429_is_honoured(client, admin, key, claude, clock):
    claude.script(CLAUDE, [Reply.rate_limited("7")])
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert limited.value.response.headers["Retry-After"] == "7"
    cooled = admin.key(key["id"])
    assert cooled["status"] == "cooling_down"
    back = clock.now().replace(tzinfo=None).isoformat(timespec="seconds")
    assert cooled["cooldown_until"].startswith(back[:-2])  # now + 7 s, to the minute's tens


@pytest.mark.both_databases
def test_an_anthropic_key_at_429_falls_over_to_an_openai_key(client, admin, claude, fake):
    admin.add_key(CLAUDE, claude.base_url, provider="anthropic", name="claude")
    admin.add_key(OPENAI, fake.base_url, name="openai")
    claude.script(CLAUDE, [Reply.rate_limited("30")])
    fake.set_behaviour(OPENAI, Behaviour.ok("From OpenAI"))
    answer = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.parse().choices[0].message.content == "From OpenAI"
    assert answer.headers["x-keyrelay-provider"] == "openai"


def test_errors_reach_each_dialect_in_its_shape(client, messages_sdk, key, claude):
    claude.script(CLAUDE, [Reply("error", status=400, error_type="invalid_request_error")] * 2)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert "fake invalid_request_error" in bad.value.message
    with pytest.raises(anthropic.BadRequestError) as raw:
        messages_sdk.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert raw.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "fake invalid_request_error",
    }


@pytest.mark.both_databases
def test_key_test_discovers_the_models(admin, key, claude):
    result = admin.call("POST", f"/keys/{key['id']}/test").json()
    assert result["result"] == "ok" and result["models"] == sorted(MODELS)
    bad = admin.add_key("sk-ant-api03-unknownkeyxxxxxxxxxx", claude.base_url, provider="anthropic")
    assert admin.call("POST", f"/keys/{bad['id']}/test").json()["result"] == "auth_failed"

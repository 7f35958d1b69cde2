"""Provider kind `gemini` (Google AI Studio's native API) behind every client dialect:
OpenAI chat, Anthropic Messages and Responses translated to generateContent and back;
system instruction, images, tools and tool results, streams, embeddings; usage from
usageMetadata booked and priced; many keys rotated round-robin, a 429 cooling its key
(RetryInfo honoured), the rotation surviving a restart, failover to another provider;
model discovery. The upstream is a fake that speaks Google's wire protocol."""

from __future__ import annotations

import base64
import json
import logging
import struct
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import anthropic
import openai
import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from gateway import tokens
from tests.conftest import MASTER_KEY, Admin, live_app
from tests.fake_anthropic import FakeAnthropic
from tests.fake_anthropic import Reply as ClaudeReply
from tests.fake_gemini import DEFAULT_TEXT, MODELS, SIGNATURE, FakeGemini, Reply, vector

KEYS = [f"AIzaSyFake{n}-aaaaaaaaaaaaaaaaaaaaaaaaaaaa" for n in "ABC"]
KEY = KEYS[0]
CLAUDE = "sk-ant-api03-gemini-failover-aaaaaaaa"
MODEL = "gemini-2.5-flash"
EMBEDDER = "gemini-embedding-001"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"


@pytest.fixture
def gemini():
    with FakeGemini(KEYS) as fake:
        yield fake


@pytest.fixture
def key(admin, gemini):
    return admin.add_key(KEY, gemini.base_url, provider="gemini", name="gemini")


@pytest.fixture
def messages_sdk(server):
    client = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    yield client
    client.close()


def logged(server, admin) -> list[dict]:
    server.app.extensions["keyrelay"].books.flush()
    return admin.logs()


def micros(usage: PriceUsage, model: str = MODEL) -> Decimal:
    price = calc_price(usage, model, provider_id="google").total_price
    return (price * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP)  # as KeyRelay rounds


def ask(client, content: str = "hi", **extra):
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **extra
    )


def test_openai_chat_is_translated_to_generate_content_and_back(client, key, gemini, server, admin):
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "Hello?"},
            {"role": "user", "content": "Again"},
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        stop=["END"],
    )
    assert completion.choices[0].message.content == DEFAULT_TEXT
    assert completion.choices[0].finish_reason == "stop"
    (sent,) = gemini.calls("generateContent")
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.key == KEY and "authorization" not in sent.headers
    assert sent.body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Say hello"}]},
            {"role": "model", "parts": [{"text": "Hello?"}]},
            {"role": "user", "parts": [{"text": "Again"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "maxOutputTokens": 50,
            "stopSequences": ["END"],
        },
    }
    reported = gemini.usage_reported[0]
    assert completion.usage.prompt_tokens == reported["promptTokenCount"]
    assert completion.usage.completion_tokens == reported["candidatesTokenCount"]
    (row,) = logged(server, admin)
    assert row["provider"] == "gemini" and row["model"] == MODEL
    assert (row["input_tokens"], row["output_tokens"]) == (
        reported["promptTokenCount"],
        reported["candidatesTokenCount"],
    )
    assert not row["usage_estimated"]
    cost = micros(
        PriceUsage(
            input_tokens=reported["promptTokenCount"],
            output_tokens=reported["candidatesTokenCount"],
        )
    )
    assert cost > 0 and Decimal(row["cost_usd"]) * 1_000_000 == cost


@pytest.mark.both_databases
def test_thoughts_and_cached_content_are_booked_and_priced(client, key, gemini, server, admin):
    gemini.script(KEY, [Reply.ok(thoughts="Let me think about it", cached=3)])
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "A question worth some thought, please"}],
        n=2,
    )
    reported = gemini.usage_reported[0]
    answer = reported["candidatesTokenCount"] + reported["thoughtsTokenCount"]
    assert completion.usage.completion_tokens == answer
    assert completion.usage.completion_tokens_details.reasoning_tokens == 5
    assert completion.usage.prompt_tokens_details.cached_tokens == 3
    assert [c.message.content for c in completion.choices] == [DEFAULT_TEXT] * 2
    assert completion.choices[0].message.model_extra["reasoning_content"] == "Let me think about it"
    assert gemini.calls()[0].body["generationConfig"] == {"candidateCount": 2}
    (row,) = logged(server, admin)
    assert row["output_tokens"] == answer and row["cache_read_tokens"] == 3
    prompt = reported["promptTokenCount"]
    cost = micros(PriceUsage(input_tokens=prompt, cache_read_tokens=3, output_tokens=answer))
    assert Decimal(row["cost_usd"]) * 1_000_000 == cost
    assert cost != micros(PriceUsage(input_tokens=prompt, output_tokens=answer))


def test_stream_is_translated_to_openai_chunks(client, key, gemini, server, admin):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    (sent,) = gemini.calls("streamGenerateContent")
    assert sent.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    reported = gemini.usage_reported[0]
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.prompt_tokens == (reported["promptTokenCount"])
    )
    assert chunks[-1].usage.completion_tokens == reported["candidatesTokenCount"]
    plain = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "again"}], stream=True
        )
    )
    assert all(c.usage is None and c.choices for c in plain)  # not asked, not shown
    rows = logged(server, admin)
    assert sorted(r["total_tokens"] for r in rows) == sorted(
        u["totalTokenCount"] for u in gemini.usage_reported
    )
    assert not any(r["usage_estimated"] for r in rows)


def test_tools_round_trip_with_a_tool_result(client, key, gemini):
    gemini.script(KEY, [Reply.function_call("get_weather", {"city": "Lagos"}, text="Checking.")])
    first = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Lagos?"}],
        tools=[WEATHER],
        tool_choice="required",
    )
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and message.content == "Checking."
    (call,) = message.tool_calls
    assert call.id and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Lagos"}
    sent = gemini.calls()[0].body
    declaration = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parametersJsonSchema": WEATHER["function"]["parameters"],
    }
    assert sent["tools"] == [{"functionDeclarations": [declaration]}]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    final = client.chat.completions.create(
        model=MODEL,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[
            {"role": "user", "content": "Weather in Lagos?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "31 C"},
        ],
    )
    assert final.choices[0].message.content == DEFAULT_TEXT
    sent = gemini.calls()[1].body
    assert sent["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather",
                                                      "args": {"city": "Lagos"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                         "response": {"result": "31 C"}}}]},
    ]  # fmt: skip
    assert sent["toolConfig"]["functionCallingConfig"] == {
        "mode": "ANY",
        "allowedFunctionNames": ["get_weather"],
    }


def test_gemini_3_gets_its_thought_signatures_back(client, key, gemini):
    gemini3 = "gemini-3-flash-preview"
    gemini.script(KEY, [Reply.function_call("get_weather", {"city": "Kano"})])
    call = (
        client.chat.completions.create(
            model=gemini3, messages=[{"role": "user", "content": "Kano?"}], tools=[WEATHER]
        )
        .choices[0]
        .message.tool_calls[0]
    )

    def follow_up(tool_call: dict) -> str:
        return (
            client.chat.completions.create(
                model=gemini3,
                tools=[WEATHER],
                messages=[
                    {"role": "user", "content": "Kano?"},
                    {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                    {"role": "tool", "tool_call_id": tool_call["id"], "content": "35 C"},
                ],
            )
            .choices[0]
            .message.content
        )

    assert follow_up(call.model_dump()) == DEFAULT_TEXT  # the fake refuses a missing one
    replayed = gemini.calls()[1].body["contents"][1]["parts"][0]
    assert replayed["thoughtSignature"] == SIGNATURE
    # A call this process never saw (another worker's, or before a restart): Google's
    # documented stand-in, which Gemini 3 takes.
    assert follow_up({**call.model_dump(), "id": "call_from_elsewhere"}) == DEFAULT_TEXT
    replayed = gemini.calls()[2].body["contents"][1]["parts"][0]
    assert replayed["thoughtSignature"] == "skip_thought_signature_validator"
    # Gemini 2.5 gets no stand-in.
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Kano?"},
            {"role": "assistant", "content": None,
             "tool_calls": [{**call.model_dump(), "id": "call_other"}]},
            {"role": "tool", "tool_call_id": "call_other", "content": "35 C"},
        ],
    )  # fmt: skip
    assert "thoughtSignature" not in gemini.calls()[3].body["contents"][1]["parts"][0]


def test_a_streamed_function_call(client, key, gemini):
    gemini.script(KEY, [Reply.function_call("get_weather", {"city": "Accra"})])
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Weather in Accra?"}],
            tools=[WEATHER],
            stream=True,
        )
    )
    calls = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Accra"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_images_go_as_inline_data(client, key, gemini):
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                ],
            }
        ],
    )
    assert gemini.calls()[0].body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": PIXEL}},
            ],
        }
    ]


def test_embeddings_single_and_batch(client, key, gemini, server, admin):
    one = client.embeddings.create(model=EMBEDDER, input="hello world")  # base64 by default
    assert one.data[0].embedding == vector("hello world", 8)
    (sent,) = gemini.calls("embedContent")
    assert sent.body == {
        "model": f"models/{EMBEDDER}",
        "content": {"parts": [{"text": "hello world"}]},
    }
    texts = ["alpha", "beta gamma", "delta"]
    batch = client.embeddings.create(
        model=EMBEDDER, input=texts, dimensions=4, encoding_format="float"
    )
    assert [d.embedding for d in batch.data] == [vector(t, 4) for t in texts]
    assert [d.index for d in batch.data] == [0, 1, 2]
    (sent,) = gemini.calls("batchEmbedContents")
    assert [r["outputDimensionality"] for r in sent.body["requests"]] == [4, 4, 4]
    counted = sum(tokens.count_text(t) for t in texts)
    assert batch.usage.prompt_tokens == counted
    rows = logged(server, admin)
    assert [r["endpoint"] for r in rows] == ["embeddings", "embeddings"]
    assert rows[0]["input_tokens"] == counted and rows[0]["usage_estimated"]
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=EMBEDDER, input=[[1, 2]])
    assert "token ids" in refused.value.message


def test_anthropic_sdk_reaches_gemini(messages_sdk, key, gemini, server, admin):
    message = messages_sdk.messages.create(
        model=MODEL,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "hi"}],
    )
    assert message.content[0].text == DEFAULT_TEXT
    sent = gemini.calls()[0].body
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["generationConfig"]["maxOutputTokens"] == 100
    reported = gemini.usage_reported[0]
    assert message.usage.input_tokens == reported["promptTokenCount"]
    assert message.usage.output_tokens == reported["candidatesTokenCount"]
    with messages_sdk.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "again"}]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].text == DEFAULT_TEXT and kinds[-1] == "message_stop"
    assert final.usage.output_tokens == gemini.usage_reported[1]["candidatesTokenCount"]
    rows = logged(server, admin)
    assert [r["endpoint"] for r in rows] == ["messages", "messages"]
    assert all(r["provider"] == "gemini" and not r["usage_estimated"] for r in rows)


def test_responses_api_reaches_gemini(client, key, gemini):
    response = client.responses.create(model=MODEL, input="Say hello", instructions="Brief.")
    assert response.output_text == DEFAULT_TEXT
    assert gemini.calls()[0].body["systemInstruction"] == {"parts": [{"text": "Brief."}]}
    assert response.usage.input_tokens == gemini.usage_reported[0]["promptTokenCount"]
    events = list(client.responses.create(model=MODEL, input="again", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == DEFAULT_TEXT


@pytest.mark.both_databases
def test_a_429_cools_the_key_and_the_next_key_serves(client, admin, gemini, clock):
    first = admin.add_key(KEYS[0], gemini.base_url, provider="gemini", name="g1")
    admin.add_key(KEYS[1], gemini.base_url, provider="gemini", name="g2")
    gemini.script(KEYS[0], [Reply.rate_limited("37s")])
    answer = ask(client)
    assert answer.parse().choices[0].message.content == DEFAULT_TEXT
    assert answer.headers["x-keyrelay-attempts"] == "2"
    assert [r.key for r in gemini.calls()] == KEYS[:2]
    cooled = admin.key(first["id"])
    assert cooled["status"] == "cooling_down"
    back = clock.now().replace(tzinfo=None) + timedelta(seconds=37)
    assert cooled["cooldown_until"].startswith(back.isoformat(timespec="seconds"))
    assert "RESOURCE_EXHAUSTED" in cooled["last_error"]


def test_only_rate_limited_keys_answer_429_with_the_retry_delay(client, key, gemini):
    gemini.script(KEY, [Reply.rate_limited("12.5s")])
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert limited.value.response.headers["Retry-After"] == "13"


@pytest.fixture
def round_robin(settings):
    settings["STRATEGY"] = "round-robin"
    return settings


def served_by(gemini) -> str:
    return gemini.calls()[-1].key


def test_keys_rotate_round_robin_and_a_429_moves_on(round_robin, client, admin, gemini, clock):
    for number, secret in enumerate(KEYS):
        admin.add_key(secret, gemini.base_url, provider="gemini", name=f"g{number}")
    order = []
    for _ in range(6):
        ask(client)
        order.append(served_by(gemini))
        clock.advance(seconds=2)
    assert order == KEYS * 2
    gemini.script(KEYS[1], [Reply.rate_limited("60s")])
    ask(client)  # KEYS[0]
    answer = ask(client)  # KEYS[1] at 429, then KEYS[2]
    assert [r.key for r in gemini.calls()[-2:]] == [KEYS[1], KEYS[2]]
    assert answer.headers["x-keyrelay-attempts"] == "2"
    clock.advance(seconds=2)
    ask(client)
    assert served_by(gemini) == KEYS[0]  # KEYS[1] is cooling down
    clock.advance(seconds=60)
    ask(client)
    assert served_by(gemini) == KEYS[1]  # back in the rotation


@pytest.mark.both_databases
def test_the_rotation_position_survives_a_restart(round_robin, server, admin, client, gemini,
                                                   clock, http):  # fmt: skip
    for number, secret in enumerate(KEYS):
        admin.add_key(secret, gemini.base_url, provider="gemini", name=f"g{number}")
    for _ in range(4):  # KEYS[0], [1], [2], [0]
        ask(client)
        clock.advance(seconds=2)
    assert served_by(gemini) == KEYS[0]
    server.app.extensions["keyrelay"].books.flush()
    with live_app(round_robin) as (_, live):  # a new process over the same database
        again = openai.OpenAI(base_url=f"{live.url}/v1", api_key=MASTER_KEY, max_retries=0)
        for expected in (KEYS[1], KEYS[2], KEYS[0]):
            ask(again)
            assert served_by(gemini) == expected
            clock.advance(seconds=2)
        again.close()
        assert len(Admin(live.url, http).logs()) >= 3


def test_a_gemini_key_at_429_falls_over_to_an_anthropic_key(client, admin, gemini, server):
    admin.add_key(KEY, gemini.base_url, provider="gemini", name="gemini", models=[MODEL])
    with FakeAnthropic([CLAUDE]) as claude:
        admin.add_key(CLAUDE, claude.base_url, provider="anthropic", name="claude",
                      models=["claude-sonnet-4-5"])  # fmt: skip
        route = {"name": "smart", "target": MODEL, "fallbacks": ["claude-sonnet-4-5"]}
        assert admin.call("POST", "/routes", route).status == 201
        gemini.script(KEY, [Reply.rate_limited("30s")])
        claude.script(CLAUDE, [ClaudeReply.ok("From Claude")])
        answer = client.chat.completions.with_raw_response.create(
            model="smart", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.parse().choices[0].message.content == "From Claude"
        assert answer.headers["x-keyrelay-provider"] == "anthropic"
        assert [r.key for r in gemini.calls()] == [KEY]
        assert claude.messages_requests[0].body["model"] == "claude-sonnet-4-5"
    (row,) = logged(server, admin)
    assert (row["requested_model"], row["model"]) == ("smart", "claude-sonnet-4-5")


def test_server_errors_fail_over_and_a_bad_request_goes_back(client, admin, gemini):
    first = admin.add_key(KEYS[0], gemini.base_url, provider="gemini", name="g1")
    admin.add_key(KEYS[1], gemini.base_url, provider="gemini", name="g2")
    assert admin.call("POST", f"/keys/{first['id']}/set-default").status == 200  # tried first
    for failure in (Reply.server_error(500), Reply.server_error(503)):
        gemini.script(KEYS[0], [failure])
        gemini.script(KEYS[1], [])
        answer = ask(client)
        assert answer.parse().choices[0].message.content == DEFAULT_TEXT
        assert answer.headers["x-keyrelay-attempts"] == "2"
    gemini.script(KEYS[0], [Reply.invalid()])
    gemini.script(KEYS[1], [Reply.invalid()])
    with pytest.raises(openai.BadRequestError) as bad:
        ask(client)
    assert "INVALID_ARGUMENT" in bad.value.message and "Invalid value" in bad.value.message
    assert bad.value.response.headers["x-keyrelay-attempts"] == "1"  # the request's fault


def test_a_bad_key_is_an_auth_failure_and_the_next_key_serves(client, admin, gemini):
    bad = admin.add_key("AIzaSyNotARealKey-xxxxxxxxxxxxxxxxxx", gemini.base_url,
                        provider="gemini", name="bad")  # fmt: skip
    admin.add_key(KEY, gemini.base_url, provider="gemini", name="good")
    answer = ask(client)
    assert answer.parse().choices[0].message.content == DEFAULT_TEXT
    assert admin.key(bad["id"])["status"] == "auth_failed"
    assert "API key not valid" in admin.key(bad["id"])["last_error"]


@pytest.mark.both_databases
def test_a_stream_cut_in_the_middle_is_counted_and_reported(client, key, gemini, server, admin):
    gemini.script(KEY, [Reply.cut()])
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "count"}], stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    (row,) = logged(server, admin)
    assert row["status_code"] == 502 and row["usage_estimated"]
    assert row["output_tokens"] == tokens.count_text("one")


@pytest.mark.both_databases
def test_key_test_discovers_the_models_across_pages(admin, key, gemini):
    result = admin.call("POST", f"/keys/{key['id']}/test").json()
    assert result["result"] == "ok" and result["models"] == sorted(MODELS)
    listed = [r for r in gemini.requests if r.method == "GET"]
    assert len(listed) == 3  # six models, two a page
    assert [r.path.partition("pageToken=")[2] for r in listed] == ["", "2", "4"]
    assert admin.key(key["id"])["discovered_models"] == sorted(MODELS)
    bad = admin.add_key("AIzaSyUnknown-yyyyyyyyyyyyyyyyyyyyyyyy", gemini.base_url,
                        provider="gemini")  # fmt: skip
    tested = admin.call("POST", f"/keys/{bad['id']}/test").json()
    assert tested["result"] == "auth_failed" and admin.key(bad["id"])["status"] == "auth_failed"


def test_the_secret_never_leaves(client, admin, key, gemini, server, caplog, web):
    caplog.set_level(logging.DEBUG)
    gemini.script(KEY, [Reply.rate_limited("5s")])
    with pytest.raises(openai.RateLimitError):
        ask(client)
    admin.call("POST", f"/keys/{key['id']}/test")
    seen = [
        admin.call("GET", "/keys").data,
        admin.call("GET", f"/keys/{key['id']}").data,
        admin.call("GET", "/logs").data,
        web.get("/keys").data,
        caplog.text.encode(),
    ]
    assert all(KEY.encode() not in blob for blob in seen)
    assert admin.key(key["id"])["secret"].endswith(KEY[-4:])  # masked only


def test_gemini_is_offered_with_its_default_base_url(admin, web):
    kinds = {k["provider"]: k for k in admin.call("GET", "/providers").json()["data"]}
    assert kinds["gemini"]["default_base_url"] == (
        "https://generativelanguage.googleapis.com/v1beta"
    )
    assert kinds["gemini"]["price_provider"] == "google"
    assert ">gemini</option>" in web.get("/keys/new").text
    made = admin.call("POST", "/keys", {"provider": "gemini", "name": "g", "secret": KEY})
    assert made.json()["base_url"] == "https://generativelanguage.googleapis.com/v1beta"


def test_base64_embeddings_decode_to_the_upstream_floats(client, key, gemini):
    answer = client.embeddings.with_raw_response.create(
        model=EMBEDDER, input="x", encoding_format="base64"
    )
    raw = json.loads(answer.text)["data"][0]["embedding"]
    assert list(struct.unpack("<8f", base64.b64decode(raw))) == vector("x", 8)


def test_a_prompt_too_long_for_gemini_is_pruned_on_a_prune_route(client, key, gemini, admin):
    made = admin.call(
        "POST", "/routes", {"name": "chat", "target": MODEL, "on_context_overflow": "prune"}
    )
    assert made.status == 201, made.data
    gemini.context_window = 120
    messages = [{"role": "system", "content": "Be brief."}]
    for number in range(6):
        messages.append({"role": "user", "content": f"question {number} " + "word " * 20})
        messages.append({"role": "assistant", "content": f"answer {number} " + "word " * 20})
    messages.append({"role": "user", "content": "the last question"})
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=messages)
    assert raw.parse().choices[0].message.content == DEFAULT_TEXT
    sent = gemini.calls()[-1].body
    assert sent["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert sent["contents"][-1]["parts"][0]["text"] == "the last question"
    kept = len(sent["contents"]) + 1  # and the system turn
    assert int(raw.headers["x-keyrelay-context-pruned"]) == len(messages) - kept > 0


def test_an_anthropic_request_reaches_gemini_without_openai_chat_between(messages_sdk, key, gemini):
    """Anthropic → internal → Gemini: top_k and thinking (which OpenAI chat has no field
    for) arrive as Gemini's own; cache marks, which Gemini has no use for, do not."""
    cached = {"type": "ephemeral"}
    message = messages_sdk.messages.create(
        model=MODEL,
        max_tokens=3000,
        system=[{"type": "text", "text": "Be brief.", "cache_control": cached}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Weather?",
                                          "cache_control": cached}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                               "name": "get_weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": "sunny"}]},
        ],
        tools=[{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"],
                "cache_control": cached}],
        extra_body={"top_k": 5},  # this SDK version has no argument for it
        stop_sequences=["END"],
        thinking={"type": "enabled", "budget_tokens": 2048},
        metadata={"user_id": "user-7"},
    )  # fmt: skip
    assert message.content[0].text == DEFAULT_TEXT
    sent = gemini.calls()[0].body
    assert sent["generationConfig"] == {
        "topK": 5,
        "maxOutputTokens": 3000,
        "stopSequences": ["END"],
        "thinkingConfig": {"thinkingBudget": 2048},
    }
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "Weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather",
                                                      "args": {"city": "Oslo"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                         "response": {"result": "sunny"}}}]},
    ]  # fmt: skip
    assert "cache_control" not in json.dumps(sent)


def test_what_gemini_cannot_carry_of_an_anthropic_request_is_refused_by_its_name(
    messages_sdk, key, gemini
):
    """A server tool and a file sent by id: Gemini has neither; the 400 names the field as
    the Anthropic client wrote it (the system prompt does not shift the turn's index)."""
    document = {"type": "document", "source": {"type": "file", "file_id": "file_011"}}
    with pytest.raises(anthropic.BadRequestError) as refused:
        messages_sdk.messages.create(
            model=MODEL,
            max_tokens=100,
            system="Be brief.",
            messages=[{"role": "user", "content": [{"type": "text", "text": "Sum up"}, document]}],
        )
    assert refused.value.status_code == 400
    assert "'messages[0].content[1]'" in refused.value.message
    with pytest.raises(anthropic.BadRequestError) as refused:
        messages_sdk.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "news?"}],
            tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        )
    assert "'tools[0]'" in refused.value.message
    assert gemini.calls() == []


def test_a_responses_request_reaches_gemini_without_openai_chat_between(client, key, gemini):
    """Responses → internal → Gemini: the structured output, reasoning effort, a PDF input
    file (which the chat form has no part for) and the function tool arrive; web search,
    which Gemini gets no twin of, is named in the answer's header."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    raw = client.responses.with_raw_response.create(
        model=MODEL,
        instructions="Be brief.",
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Sum it up"},
            {"type": "input_file", "filename": "r.pdf",
             "file_data": "data:application/pdf;base64,JVBERi0xLjQK"},
        ]}],
        tools=[{"type": "function", "name": "get_weather", "parameters": schema},
               {"type": "web_search"}],
        text={"format": {"type": "json_schema", "name": "place", "schema": schema}},
        reasoning={"effort": "low"},
        max_output_tokens=400,
    )  # fmt: skip
    assert raw.headers["x-keyrelay-ignored"] == "tools[1] (web_search)"
    assert raw.parse().output_text
    sent = gemini.calls()[0].body
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["contents"] == [{"role": "user", "parts": [
        {"text": "Sum it up"},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0xLjQK"}},
    ]}]  # fmt: skip
    assert sent["generationConfig"] == {
        "maxOutputTokens": 400,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
        "thinkingConfig": {"thinkingBudget": 1024},
    }
    assert sent["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "parametersJsonSchema": schema}]}]  # fmt: skip

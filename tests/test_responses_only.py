"""A model only OpenAI's Responses API serves, asked by a chat or Messages client: on a key
with `responses_api` the request goes to /responses (encoded from the client's own), and
the answer (whole or streamed, tool calls too) comes back in the client's format with its
usage booked to the token. A model known to be Responses-only goes there at once; another
is learned from the upstream's "only supported in v1/responses" answer, retried there at
once without blaming the key, and sent straight there afterwards. The official openai and
anthropic SDKs talk to KeyRelay; the upstream is the fake OpenAI server over HTTP."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from gateway.providers.openai import ResponsesOnly
from tests.conftest import MASTER_KEY
from tests.fake_upstream import Behaviour

SECRET = "sk-responses-only-aaaaaaaaaaaaaaaa"
KNOWN = "o3-pro"  # on the adapter's list of Responses-only models
LEARNED = "gpt-9-deep-thought"  # not on it: learned from the upstream's answer
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": CITY}}
THINKING = "I should greet them warmly"
ANSWER = "Hello there from the Responses API"


@pytest.fixture
def key(admin, fake):
    fake.responses_only = {KNOWN, LEARNED}
    return admin.add_key(SECRET, fake.base_url, name="responses", responses_api=True)


@pytest.fixture
def messages_sdk(server):
    client = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    yield client
    client.close()


def logged(server, admin) -> list[dict]:
    server.app.extensions["keyrelay"].books.flush()
    return admin.logs()


def paths(fake) -> list[str]:
    return [request.path for request in fake.requests]


def thinking_and_cache(prompt: int = 120, cached: int = 64) -> Behaviour:
    """An answer after reasoning, part of its prompt read from the upstream's cache."""
    return Behaviour("ok", content=ANSWER, reasoning=THINKING, prompt_tokens=prompt,
                     cached_tokens=cached)  # fmt: skip


def assert_booked(server, admin, fake, prompt: int, cached: int) -> dict:
    """The request log's row: the upstream's usage to the token (reasoning is output)."""
    (row,) = logged(server, admin)
    (reported,) = fake.usage_reported
    assert (row["input_tokens"], row["output_tokens"]) == (prompt, reported["completion_tokens"])
    assert row["cache_read_tokens"] == cached and row["status_code"] == 200
    assert reported["prompt_tokens"] == prompt
    return row


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_client_is_served_a_known_responses_only_model(
    client, key, fake, server, admin, stream
):
    fake.script(SECRET, [thinking_and_cache()])
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    if stream:
        chunks = list(client.chat.completions.create(
            model=KNOWN, messages=messages, stream=True, stream_options={"include_usage": True},
            reasoning_effort="high", max_completion_tokens=500,
        ))  # fmt: skip
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        thought = "".join(
            getattr(c.choices[0].delta, "reasoning_content", None) or ""
            for c in chunks
            if c.choices
        )
        (finish,) = [c.choices[0].finish_reason for c in chunks if c.choices and
                     c.choices[0].finish_reason]  # fmt: skip
        usage = chunks[-1].usage
    else:
        completion = client.chat.completions.create(
            model=KNOWN, messages=messages, reasoning_effort="high", max_completion_tokens=500
        )
        message = completion.choices[0].message
        text, thought = message.content, message.model_extra["reasoning_content"]
        finish, usage = completion.choices[0].finish_reason, completion.usage
    assert (text, thought, finish) == (ANSWER, THINKING, "stop")
    reasoning_tokens = len(THINKING.split())
    assert (usage.prompt_tokens, usage.completion_tokens) == (120, 6 + reasoning_tokens)
    assert usage.prompt_tokens_details.cached_tokens == 64
    assert usage.completion_tokens_details.reasoning_tokens == reasoning_tokens
    (sent,) = fake.requests  # straight to /responses: no chat completion tried first
    assert sent.path == "/v1/responses"
    assert sent.body["instructions"] == "Be kind."
    assert sent.body["input"] == [{"role": "user", "content": "Hi"}]
    assert sent.body["reasoning"] == {"effort": "high"} and sent.body["max_output_tokens"] == 500
    assert sent.body["store"] is False
    assert sent.body["include"] == ["reasoning.encrypted_content"]
    assert sent.body.get("stream", False) is stream
    assert_booked(server, admin, fake, 120, 64)


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_tool_call_round_trip_through_the_responses_api(client, key, fake, stream):
    fake.script(SECRET, [Behaviour.tool_call("get_weather", {"city": "Paris"}),
                         Behaviour.ok("Sunny in Paris")])  # fmt: skip
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        chunks = list(client.chat.completions.create(
            model=KNOWN, messages=asked, tools=[WEATHER], stream=True))  # fmt: skip
        calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices]
        pieces = [call for group in calls if group for call in group]
        call_id, name = pieces[0].id, pieces[0].function.name
        arguments = "".join(p.function.arguments or "" for p in pieces)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        completion = client.chat.completions.create(model=KNOWN, messages=asked, tools=[WEATHER])
        (call,) = completion.choices[0].message.tool_calls
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
        finish = completion.choices[0].finish_reason
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Paris"}, "tool_calls")
    upstream_call = fake.requests[0].body
    assert upstream_call["tools"] == [
        {"type": "function", "name": "get_weather", "parameters": CITY, "strict": None}
    ]
    answer = client.chat.completions.create(model=KNOWN, tools=[WEATHER], messages=[
        *asked,
        {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function",
         "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny"},
    ])  # fmt: skip
    assert answer.choices[0].message.content == "Sunny in Paris"
    assert paths(fake) == ["/v1/responses", "/v1/responses"]
    assert fake.requests[1].body["input"][1:] == [
        {"type": "function_call", "call_id": call_id, "name": "get_weather",
         "arguments": arguments},
        {"type": "function_call_output", "call_id": call_id, "output": "Sunny"},
    ]  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_the_upstream_says_is_responses_only_is_learned(
    client, key, fake, server, admin, stream
):
    def ask() -> str:
        asked = {"model": LEARNED, "messages": [{"role": "user", "content": "Hi"}]}
        if not stream:
            return client.chat.completions.create(**asked).choices[0].message.content
        chunks = client.chat.completions.create(**asked, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert ask() == "Hello from the fake upstream"
    # Refused as chat, retried on the same key at once, through the Responses API.
    assert paths(fake) == ["/v1/chat/completions", "/v1/responses"]
    assert ask() == "Hello from the fake upstream"
    assert paths(fake)[2:] == ["/v1/responses"]  # remembered: straight there
    rows = logged(server, admin)
    assert [row["status_code"] for row in rows] == [200, 200]
    assert admin.key(key["id"])["status"] == "active"  # not blamed, not cooled down


@pytest.mark.parametrize("stream", [False, True])
def test_a_messages_client_is_served_a_responses_only_model(
    messages_sdk, key, fake, server, admin, stream
):
    fake.script(SECRET, [thinking_and_cache(90, 32)])
    asked = {"model": KNOWN, "max_tokens": 800, "system": "Be kind.",
             "messages": [{"role": "user", "content": "Hi"}],
             "thinking": {"type": "enabled", "budget_tokens": 1024}}  # fmt: skip
    if stream:
        with messages_sdk.messages.stream(**asked) as events:
            message = events.get_final_message()
    else:
        message = messages_sdk.messages.create(**asked)
    thinking, text = message.content
    assert (thinking.type, thinking.thinking) == ("thinking", THINKING)
    assert thinking.signature.startswith("enc_")  # its encrypted reasoning, to hand back
    assert (text.type, text.text, message.stop_reason) == ("text", ANSWER, "end_turn")
    # Anthropic counts the prompt without the cache reads; KeyRelay books all of it.
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (90 - 32, 32)
    assert message.usage.output_tokens == 6 + len(THINKING.split())
    (sent,) = fake.requests
    assert sent.path == "/v1/responses" and sent.body["instructions"] == "Be kind."
    assert sent.body["reasoning"] == {"effort": "low"} and sent.body["max_output_tokens"] == 800
    assert_booked(server, admin, fake, 90, 32)


@pytest.mark.parametrize("stream", [False, True])
def test_a_messages_tool_use_round_trip_through_the_responses_api(messages_sdk, key, fake, stream):
    fake.script(SECRET, [Behaviour.tool_call("get_weather", {"city": "Paris"}),
                         Behaviour.ok("Sunny in Paris")])  # fmt: skip
    tools = [{"name": "get_weather", "description": "The weather", "input_schema": CITY}]
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with messages_sdk.messages.stream(
            model=KNOWN, max_tokens=300, tools=tools, messages=asked
        ) as events:
            message = events.get_final_message()
    else:
        message = messages_sdk.messages.create(
            model=KNOWN, max_tokens=300, tools=tools, messages=asked
        )
    (use,) = [block for block in message.content if block.type == "tool_use"]
    assert (use.name, use.input, message.stop_reason) == ("get_weather", {"city": "Paris"},
                                                          "tool_use")  # fmt: skip
    answer = messages_sdk.messages.create(model=KNOWN, max_tokens=300, tools=tools, messages=[
        *asked,
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id,
                                           "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "Sunny"}]},
    ])  # fmt: skip
    assert answer.content[0].text == "Sunny in Paris"
    assert paths(fake) == ["/v1/responses", "/v1/responses"]
    assert fake.requests[1].body["input"][1:] == [
        {"type": "function_call", "call_id": use.id, "name": "get_weather",
         "arguments": json.dumps(use.input, separators=(",", ":"))},
        {"type": "function_call_output", "call_id": use.id, "output": "Sunny"},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"n": 2}, "n"), ({"stop": ["END"]}, "stop"), ({"seed": 7}, "seed"),
     ({"frequency_penalty": 0.5}, "frequency_penalty")],
)  # fmt: skip
def test_what_the_responses_api_cannot_carry_is_refused_by_name(client, key, fake, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=KNOWN, messages=[{"role": "user", "content": "Hi"}], **fields
        )
    assert (caught.value.code, caught.value.param) == ("unsupported_by_provider", param)
    assert fake.requests == []
    # Only on that path: a model chat completions serve carries it.
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], **fields
    )
    assert paths(fake) == ["/v1/chat/completions"]


def test_a_key_without_the_responses_api_is_not_sent_there(client, admin, fake):
    fake.responses_only = {KNOWN}
    admin.add_key(SECRET, fake.base_url, name="chat-only")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=KNOWN, messages=[{"role": "user", "content": "Hi"}])
    assert paths(fake) == ["/v1/chat/completions"]


def test_a_probe_of_one_token_asks_the_least_the_responses_api_takes(messages_sdk, key, fake):
    message = messages_sdk.messages.create(
        model=KNOWN, max_tokens=1, messages=[{"role": "user", "content": "quota"}]
    )
    assert message.content[0].text == "Hello from the fake upstream"
    (sent,) = fake.requests
    assert sent.path == "/v1/responses" and sent.body["max_output_tokens"] == 16


def test_what_is_learned_is_per_key_and_model_and_bounded():
    learned = ResponsesOnly()
    for number in range(ResponsesOnly.SIZE + 1):
        learned.add((number, LEARNED))
    assert (0, LEARNED) not in learned  # the oldest forgotten
    assert (1, LEARNED) in learned and (ResponsesOnly.SIZE, LEARNED) in learned
    assert (1, KNOWN) not in learned


def test_a_messages_client_hands_its_reasoning_back(messages_sdk, key, fake):
    fake.script(SECRET, [Behaviour.ok(ANSWER, reasoning=THINKING), Behaviour.ok()])
    asked = {"model": KNOWN, "max_tokens": 800,
             "thinking": {"type": "enabled", "budget_tokens": 1024}}  # fmt: skip
    first = [{"role": "user", "content": "Hi"}]
    message = messages_sdk.messages.create(**asked, messages=first)
    thinking = message.content[0]
    messages_sdk.messages.create(**asked, messages=[
        *first,
        {"role": "assistant", "content": [block.model_dump() for block in message.content]},
        {"role": "user", "content": "And now?"},
    ])  # fmt: skip
    handed = fake.requests[1].body["input"]
    assert handed[1] == {
        "type": "reasoning", "encrypted_content": thinking.signature,
        "summary": [{"type": "summary_text", "text": THINKING}],
    }  # fmt: skip
    assert handed[2] == {"role": "assistant", "content": ANSWER}

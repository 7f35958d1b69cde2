"""The Responses API (`/v1/responses`) through the official OpenAI SDK, translated for a
chat-completions upstream: text and items, tools and their round trip, streamed events,
stored responses and `previous_response_id`."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import MASTER_KEY
from tests.fake_upstream import TOOL_CALL_ID, Behaviour

SECRET = "sk-responses-aaaaaaaaaaaaaaaa"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def key(admin, fake):
    return admin.add_key(SECRET, fake.base_url)


def test_create_with_text_input(client, key, fake, server, admin):
    response = client.responses.create(
        model="gpt-4o-mini", instructions="Be brief.", input="Say hello", max_output_tokens=50
    )
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Hello from the fake upstream"
    assert response.usage.input_tokens == fake.usage_reported[0]["prompt_tokens"]
    assert response.usage.output_tokens == fake.usage_reported[0]["completion_tokens"]
    (sent,) = fake.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent.body["max_tokens"] == 50
    server.app.extensions["keyrelay"].books.flush()
    (row,) = admin.logs()
    assert row["endpoint"] == "responses" and row["status_code"] == 200


def test_stream_events_in_order(client, key, fake):
    events = list(client.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert "response.output_text.delta" in kinds
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello from the fake upstream"
    final = events[-1].response
    assert final.output_text == text
    assert final.usage.total_tokens == fake.usage_reported[0]["total_tokens"]


def test_function_call_round_trip_streamed(client, key, fake):
    fake.script(
        SECRET,
        [Behaviour.tool_call("get_weather", {"city": "Lagos"}), Behaviour.ok("Sunny in Lagos.")],
    )
    events = list(
        client.responses.create(
            model="gpt-4o-mini", input="Weather in Lagos?", tools=[WEATHER], stream=True
        )
    )
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == {"city": "Lagos"}
    (call,) = [i for i in events[-1].response.output if i.type == "function_call"]
    assert call.name == "get_weather" and call.call_id == TOOL_CALL_ID
    final = client.responses.create(
        model="gpt-4o-mini",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Lagos?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "31 C"},
        ],
    )
    assert final.output_text == "Sunny in Lagos."
    sent = fake.requests[1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    user, assistant, tool = sent["messages"]
    assert assistant["tool_calls"][0]["id"] == TOOL_CALL_ID
    assert tool == {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": "31 C"}


@pytest.mark.both_databases
def test_previous_response_id_continues_a_stored_conversation(client, key, fake):
    first = client.responses.create(model="gpt-4o-mini", input="My name is Ada.")
    again = client.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == first.output_text
    client.responses.create(
        model="gpt-4o-mini", input="What is my name?", previous_response_id=first.id
    )
    messages = fake.requests[1].body["messages"]
    assert messages == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello from the fake upstream"},
        {"role": "user", "content": "What is my name?"},
    ]


@pytest.mark.both_databases
def test_store_false_keeps_nothing(client, key):
    response = client.responses.create(model="gpt-4o-mini", input="secret", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-4o-mini", input="more", previous_response_id=response.id)


@pytest.mark.both_databases
def test_stored_responses_belong_to_their_client_key(server, admin, key):
    made = [admin.call("POST", "/client-keys", {"name": name}).json()["key"] for name in ("a", "b")]
    first, second = (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=k, max_retries=0) for k in made
    )
    response = first.responses.create(model="gpt-4o-mini", input="mine")
    assert first.responses.retrieve(response.id).id == response.id
    with pytest.raises(openai.NotFoundError):
        second.responses.retrieve(response.id)
    first.close()
    second.close()


def test_bad_requests_are_400(server, http, key, fake):
    for body, param in (
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": "x", "max_output_tokens": -1}, "max_output_tokens"),
    ):
        response = http.request(
            "POST",
            f"{server.url}/v1/responses",
            json=body,
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
        assert response.status == 400, body
        assert response.json()["error"]["param"] == param
    assert fake.requests == []


def test_a_key_with_the_responses_api_gets_passthrough(client, admin, fake, server):
    made = admin.add_key(SECRET, fake.base_url, responses_api=True)
    assert made["responses_api"] is True
    body = {"model": "gpt-4o-mini", "input": "Say hello", "reasoning": {"summary": "auto"}}
    response = client.responses.create(**body)
    assert response.id.startswith("resp_upstream_")  # the upstream's own object
    assert response.output_text == "Hello from the fake upstream"
    (sent,) = fake.requests
    assert sent.path == "/v1/responses" and sent.body == body  # the client's body as it is
    events = list(client.responses.create(**body, stream=True))
    assert [e.type for e in events][0] == "response.created"
    assert events[-1].type == "response.completed"
    assert events[-1].response.id.startswith("resp_upstream_")
    # A conversation the upstream keeps goes to it: not looked up here.
    client.responses.create(model="gpt-4o-mini", input="more", previous_response_id="resp_x")
    assert fake.requests[-1].body["previous_response_id"] == "resp_x"
    server.app.extensions["keyrelay"].books.flush()
    rows = admin.logs()
    assert [r["endpoint"] for r in rows] == ["responses"] * 3
    assert all(r["total_tokens"] > 0 and not r["usage_estimated"] for r in rows)


def test_an_unknown_previous_response_without_passthrough_is_404(client, key, fake):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-4o-mini", input="x", previous_response_id="resp_x")
    assert fake.requests == []


@pytest.mark.both_databases
def test_a_deleted_keys_responses_go_with_it_and_its_id_is_never_reused(server, admin, key):
    made = [admin.call("POST", "/client-keys", {"name": n}).json() for n in ("old", "newest")]
    newest = openai.OpenAI(base_url=f"{server.url}/v1", api_key=made[1]["key"], max_retries=0)
    response = newest.responses.create(model="gpt-4o-mini", input="my secret plans")
    newest.close()
    assert admin.call("DELETE", f"/client-keys/{made[1]['id']}").status == 204
    again = admin.call("POST", "/client-keys", {"name": "after"}).json()
    assert again["id"] > made[1]["id"] > made[0]["id"]  # ids only go up
    later = openai.OpenAI(base_url=f"{server.url}/v1", api_key=again["key"], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        later.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        later.responses.create(model="gpt-4o-mini", input="go on", previous_response_id=response.id)
    later.close()
    # Not even the master key finds it: the deleted key's conversations are gone.
    assert (
        admin.http.request(
            "GET",
            f"{server.url}/v1/responses/{response.id}",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        ).status
        == 404
    )


def test_a_responses_request_reaches_an_openai_chat_key_as_the_chat_body_it_implies(
    client, key, fake
):
    """Decoded once into the internal request, encoded once as OpenAI chat: the answer's
    format, the allowed tools, the cache key and the account hints all carried; an
    ordinary model's answer cap in `max_tokens`."""
    client.responses.create(
        model="gpt-4o-mini",
        instructions="Be brief.",
        input="Weather in Oslo?",
        max_output_tokens=50,
        tools=[WEATHER, {**WEATHER, "name": "get_time"}],
        tool_choice={"type": "allowed_tools", "mode": "required",
                     "tools": [{"type": "function", "name": "get_weather"}]},
        text={"format": {"type": "json_schema", "name": "city",
                         "schema": {"type": "object", "properties": {}}}},
        prompt_cache_key="conversation-1",
        metadata={"team": "maps"},
    )  # fmt: skip
    sent = fake.requests[0].body
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
    ]
    assert sent["max_tokens"] == 50 and "max_completion_tokens" not in sent
    # Few OpenAI-compatible servers know `allowed_tools`: the tools it allows are offered.
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_weather"]
    assert sent["tool_choice"] == "required"
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "city", "schema": {"type": "object", "properties": {}}}}  # fmt: skip
    assert sent["prompt_cache_key"] == "conversation-1"
    assert sent["metadata"] == {"team": "maps"}

"""The Responses request encoder: a Responses body survives decode → encode → decode, and
chat and Anthropic requests encode to bodies OpenAI's CreateResponse schema accepts; the
Responses reply and stream decoders read what the Responses API answers."""

from __future__ import annotations

import json

import pytest

from gateway.codecs import events as ev
from gateway.codecs.anthropic import request as anthropic_request
from gateway.codecs.openai_chat import request as chat_request
from gateway.codecs.openai_responses.reply import decode as decode_reply
from gateway.codecs.openai_responses.request import decode, encode
from gateway.codecs.openai_responses.stream_in import Decoder
from gateway.codecs.reply import Text, Thinking, ToolCall, Usage
from tests.openai_document import assert_conforms as conforms


def assert_conforms(name: str, body: dict) -> None:
    """The body conforms to the document, which has one flaw read literally: a message
    with content parts matches two branches of `InputItem`'s oneOf (its discriminator
    tells them apart, JSON Schema cannot), so such content is checked on its own. And a
    reasoning item handed back goes without an id (`store` false: its encrypted content
    is what the upstream reads), which the document asks for."""
    items = body["input"] if isinstance(body.get("input"), list) else []
    for item in items:
        if isinstance(item.get("content"), list) and "role" in item:
            conforms("InputMessageContentList", item["content"])
    flat = [
        {**item, "content": "…"} if isinstance(item.get("content"), list) and "role" in item
        else {"id": "rs_x", **item} if item.get("type") == "reasoning" else item
        for item in items
    ]  # fmt: skip
    conforms(name, {**body, **({"input": flat} if items else {})})


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
IMAGE = "data:image/png;base64,iVBORw0KGgo="

# Responses bodies (each valid): decode(encode(decode(body))) == decode(body).
RESPONSES_BODIES = {
    "text": {"model": "o3-pro", "input": "Hi"},
    "instructions and settings": {
        "model": "o3-pro", "instructions": "Be brief.", "input": "Hi",
        "max_output_tokens": 100, "temperature": 0.5, "top_p": 0.9, "user": "u1",
        "prompt_cache_key": "pk", "metadata": {"a": "b"}, "service_tier": "flex",
        "safety_identifier": "s1", "stream": True,
    },
    "a system message as an input item": {
        "model": "o3-pro",
        "input": [{"role": "system", "content": "Rules."}, {"role": "user", "content": "Hi"}],
    },
    "parts": {"model": "o3-pro", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "Look"},
        {"type": "input_image", "image_url": IMAGE, "detail": "high"},
        {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "auto"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBER",
         "filename": "r.pdf"},
        {"type": "input_file", "file_id": "file_1"},
        {"type": "input_file", "file_url": "https://x.test/r.pdf"},
    ]}]},
    "a tool round": {
        "model": "o3-pro",
        "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "enc"},
            {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "e2",
             "content": [{"type": "reasoning_text", "text": "think"}]},
            {"type": "reasoning", "id": "rs_3", "encrypted_content": "e3",
             "summary": [{"type": "summary_text", "text": "plan"}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather",
             "arguments": '{"city":"Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"role": "assistant", "content": "It is sunny."},
        ],
        "tools": [{"type": "function", "name": "weather", "description": "w",
                   "parameters": SCHEMA, "strict": False}],
        "tool_choice": {"type": "function", "name": "weather"},
        "parallel_tool_calls": False,
    },
    "allowed tools": {
        "model": "o3-pro", "input": "Hi",
        "tools": [{"type": "function", "name": "a", "parameters": SCHEMA, "strict": True},
                  {"type": "function", "name": "b", "parameters": SCHEMA, "strict": None}],
        "tool_choice": {"type": "allowed_tools", "mode": "required",
                        "tools": [{"type": "function", "name": "a"}]},
    },
    "structured output": {
        "model": "o3-pro", "input": "Hi",
        "text": {"format": {"type": "json_schema", "name": "city", "schema": SCHEMA,
                            "strict": True}, "verbosity": "low"},
        "reasoning": {"effort": "high", "summary": "auto"},
    },
    "json mode and log probabilities": {
        "model": "gpt-4.1", "input": "Hi", "text": {"format": {"type": "json_object"}},
        "top_logprobs": 3, "tool_choice": "required",
    },
}  # fmt: skip


@pytest.mark.parametrize("name", RESPONSES_BODIES)
def test_a_responses_body_survives_encoding(name):
    body = RESPONSES_BODIES[name]
    assert_conforms("CreateResponse", body)  # the table itself is valid
    sent = encode(decode(body))
    assert_conforms("CreateResponse", sent)
    assert decode(sent) == decode(body)
    assert sent["store"] is False  # nothing kept upstream unless asked


CHAT_BODIES = {
    "chat with everything it shares": {
        "model": "o3-pro", "max_completion_tokens": 200, "temperature": 0.2,
        "reasoning_effort": "high", "user": "u", "prompt_cache_key": "k",
        "metadata": {"a": "b"}, "parallel_tool_calls": False, "stream": True,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}},
        "messages": [
            {"role": "system", "content": "Rules."},
            {"role": "user", "content": [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": IMAGE}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER",
                                          "filename": "r.pdf"}},
            ]},
            {"role": "assistant", "content": "Calling.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": SCHEMA}}],
        "tool_choice": {"type": "allowed_tools", "allowed_tools": {
            "mode": "auto", "tools": [{"type": "function", "function": {"name": "weather"}}]}},
    },
    "chat, bare": {"model": "o3-pro", "messages": [{"role": "user", "content": "Hi"}]},
}  # fmt: skip

ANTHROPIC_BODIES = {
    "messages with thinking and tools": {
        "model": "o3-pro", "max_tokens": 1024, "system": [{"type": "text", "text": "Rules.",
                                                           "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": [{"name": "weather", "description": "w", "input_schema": SCHEMA}],
        "tool_choice": {"type": "any"},
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "text", "text": "Calling."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgo="}},
            ]},
        ],
        "stream": True,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", CHAT_BODIES)
def test_a_chat_request_encodes_to_a_valid_responses_body(name):
    sent = encode(chat_request.decode(CHAT_BODIES[name]))
    assert_conforms("CreateResponse", sent)


def test_the_chat_request_is_carried_whole():
    sent = encode(chat_request.decode(CHAT_BODIES["chat with everything it shares"]))
    assert sent["instructions"] == "Rules."
    assert [item.get("type", "message") for item in sent["input"]] == [
        "message", "message", "function_call", "function_call_output"
    ]  # fmt: skip
    assert [part["type"] for part in sent["input"][0]["content"]] == [
        "input_text", "input_image", "input_file"
    ]  # fmt: skip
    assert sent["input"][1] == {"role": "assistant", "content": "Calling."}
    assert sent["tool_choice"] == {
        "type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "weather"}]
    }  # fmt: skip
    assert sent["text"]["format"] == {"type": "json_schema", "name": "city", "schema": SCHEMA,
                                      "strict": True}  # fmt: skip
    assert (sent["max_output_tokens"], sent["reasoning"], sent["parallel_tool_calls"]) == (
        200, {"effort": "high"}, False
    )  # fmt: skip
    assert (sent["user"], sent["prompt_cache_key"], sent["stream"]) == ("u", "k", True)


def test_log_probabilities_asked_by_a_chat_client_are_included():
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}]}
    sent = encode(chat_request.decode({**body, "logprobs": True}))
    assert sent["include"] == ["message.output_text.logprobs"] and "top_logprobs" not in sent
    sent = encode(chat_request.decode({**body, "logprobs": True, "top_logprobs": 2}))
    assert (sent["include"], sent["top_logprobs"]) == (["message.output_text.logprobs"], 2)
    assert "include" not in encode(chat_request.decode(body))


@pytest.mark.parametrize("name", ANTHROPIC_BODIES)
def test_an_anthropic_request_encodes_to_a_valid_responses_body(name):
    sent = encode(anthropic_request.decode(ANTHROPIC_BODIES[name]))
    reasoning = [item for item in sent["input"] if item.get("type") == "reasoning"]
    assert reasoning == [{"type": "reasoning", "encrypted_content": "sig",
                          "summary": [{"type": "summary_text", "text": "hm"}]}]  # fmt: skip
    assert_conforms("CreateResponse", sent)
    assert sent["instructions"] == "Rules." and sent["tool_choice"] == "required"
    kinds = [item.get("type", "message") for item in sent["input"]]
    assert kinds == ["message", "reasoning", "message", "function_call",
                     "function_call_output", "message"]  # fmt: skip


RESPONSE = {
    "id": "resp_1", "object": "response", "created_at": 1700000000, "status": "completed",
    "model": "o3-pro-2025-06-10",
    "output": [
        {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}],
         "encrypted_content": "enc"},
        {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Hi", "annotations": [], "logprobs": []}]},
        {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "weather",
         "arguments": '{"city":"Paris"}', "status": "completed"},
    ],
    "usage": {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 20},
              "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 12},
              "total_tokens": 80},
}  # fmt: skip


def test_a_response_decodes_into_the_internal_reply():
    reply = decode_reply(RESPONSE)
    (choice,) = reply.choices
    assert choice.parts == [
        Thinking("plan", signature="enc"),
        Text("Hi"),
        ToolCall("call_1", "weather", '{"city":"Paris"}'),
    ]
    assert (choice.stop, reply.model, reply.id) == ("tool_use", "o3-pro-2025-06-10", "resp_1")
    assert reply.usage == Usage(50, 30, cache_read=20, reasoning=12)
    cut = {**RESPONSE, "status": "incomplete", "output": RESPONSE["output"][1:2],
           "incomplete_details": {"reason": "max_output_tokens"}}  # fmt: skip
    assert decode_reply(cut).choices[0].stop == "length"


def _sse(kind: str, **payload) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


def test_a_responses_stream_decodes_into_internal_events():
    call = RESPONSE["output"][2]
    events = [
        _sse("response.created", response={"id": "resp_1", "model": "o3-pro"}),
        _sse("response.output_item.added", output_index=0,
             item={"type": "reasoning", "id": "rs_1", "summary": []}),
        _sse("response.reasoning_summary_text.delta", output_index=0, delta="plan"),
        _sse("response.output_item.done", output_index=0, item=RESPONSE["output"][0]),
        _sse("response.output_item.added", output_index=1,
             item={"type": "message", "id": "msg_1", "content": []}),
        _sse("response.content_part.added", output_index=1, content_index=0,
             part={"type": "output_text", "text": ""}),
        _sse("response.output_text.delta", output_index=1, content_index=0, delta="Hi"),
        _sse("response.content_part.done", output_index=1, content_index=0, part={}),
        _sse("response.output_item.done", output_index=1, item=RESPONSE["output"][1]),
        _sse("response.output_item.added", output_index=2, item={**call, "arguments": ""}),
        _sse("response.function_call_arguments.delta", output_index=2, delta='{"city":'),
        _sse("response.function_call_arguments.delta", output_index=2, delta='"Paris"}'),
        _sse("response.output_item.done", output_index=2, item=call),
        _sse("response.completed", response=RESPONSE),
    ]  # fmt: skip
    decoder = Decoder()
    got = [event for chunk in events for event in decoder.feed([chunk])]
    assert got == [
        ev.Start("resp_1", "o3-pro"),
        ev.PartStart(0, "thinking"), ev.ThinkingDelta(0, "plan"), ev.Signature(0, "enc"),
        ev.PartStop(0),
        ev.PartStart(1, "text"), ev.TextDelta(1, "Hi"), ev.PartStop(1),
        ev.PartStart(2, "tool_call", id="call_1", name="weather"),
        ev.ArgumentsDelta(2, '{"city":'), ev.ArgumentsDelta(2, '"Paris"}'), ev.PartStop(2),
        ev.Stop("tool_use", "completed"),
        ev.UsageEvent(Usage(50, 30, cache_read=20, reasoning=12)),
        ev.End(),
    ]  # fmt: skip


def test_a_failed_responses_stream_decodes_into_an_error():
    failed = {"status": "failed", "error": {"code": "server_error", "message": "boom"}}
    got = Decoder().feed([_sse("response.failed", response=failed)])
    assert got == [ev.Start(), ev.Error("boom", "server_error")]

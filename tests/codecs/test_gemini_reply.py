"""The Gemini codec: a generateContent answer and its stream → the internal language."""

from __future__ import annotations

import orjson

from gateway.codecs import events as ev
from gateway.codecs.anthropic import reply as anthropic
from gateway.codecs.gemini import reply as codec
from gateway.codecs.reply import Text, Thinking, ToolCall, Usage
from gateway.providers.gemini_sse import SIGNATURES, GeminiStream

ANSWER = {
    "responseId": "r1",
    "modelVersion": "gemini-2.5-flash",
    "candidates": [
        {
            "index": 0,
            "finishReason": "STOP",
            "content": {
                "role": "model",
                "parts": [
                    {"text": "Weigh it.", "thought": True, "thoughtSignature": "ts-1"},
                    {"text": "Sunny."},
                    {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "cs"},
                ],
            },
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 40,
        "candidatesTokenCount": 6,
        "thoughtsTokenCount": 3,
        "cachedContentTokenCount": 32,
    },
}

# The signature cache is the process's: an id no other test uses, so none sees this one.
SIGNED = "call-signed-by-the-gemini-reply-test"


def test_decode_reads_thoughts_calls_and_cached_content():
    reply = codec.decode(ANSWER)
    (choice,) = reply.choices
    thinking, text, call = choice.parts
    assert thinking == Thinking("Weigh it.", "ts-1")
    assert text == Text("Sunny.")
    assert (call.name, call.arguments, call.signature) == ("f", '{"a":1}', "cs")
    # Gemini says STOP beside a call: the turn ended to have it run.
    assert (choice.stop, choice.raw_stop) == ("tool_use", "STOP")
    assert reply.usage == Usage(40, 9, cache_read=32, reasoning=3)


def test_a_blocked_prompt_is_a_content_filter_stop():
    reply = codec.decode({"promptFeedback": {"blockReason": "SAFETY"}}, "m")
    assert (reply.choices[0].stop, reply.model) == ("content_filter", "m")


def test_encoded_for_an_anthropic_client():
    message = anthropic.encode(codec.decode(ANSWER))
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use"]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["cache_read_input_tokens"] == 32


def _sse(answer: dict) -> bytes:
    return b"data: " + orjson.dumps(answer) + b"\r\n\r\n"


def test_stream_is_read_into_events():
    first = {"candidates": [{"index": 0, "content": {"parts": [{"text": "Sun"}]}}],
             "modelVersion": "g", "responseId": "r"}  # fmt: skip
    last = {
        "candidates": [
            {"index": 0, "finishReason": "STOP", "content": {"parts": [
                {"text": "ny."},
                {"functionCall": {"id": SIGNED, "name": "f", "args": {}}, "thoughtSignature": "s"},
            ]}}
        ],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2},
    }  # fmt: skip
    reader = GeminiStream("m")
    events = reader.feed(_sse(first)) + reader.feed(_sse(last))
    assert events == [
        ev.Start("r", "g"),
        ev.PartStart(0, "text"),
        ev.TextDelta(0, "Sun"),
        ev.TextDelta(0, "ny."),
        ev.PartStop(0),
        ev.PartStart(1, "tool_call", id=SIGNED, name="f"),
        ev.ArgumentsDelta(1, "{}"),
        ev.PartStop(1),
        ev.Stop("tool_use", "STOP"),
        ev.UsageEvent(Usage(4, 2)),
        ev.End(),
    ]
    assert reader.done and reader.read_usage().output_tokens == 2
    assert reader.completion_text() == "Sunny."
    assert SIGNATURES.get(SIGNED) == "s"
    assert isinstance(codec.call_of({"functionCall": {"name": "x"}}), ToolCall)

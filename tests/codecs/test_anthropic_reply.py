"""The Anthropic codec: a Messages `message` and its stream events ⇄ the internal language."""

from __future__ import annotations

import orjson

from gateway.codecs import events as ev
from gateway.codecs.anthropic import reply as codec
from gateway.codecs.anthropic.stream import Decoder, Encoder
from gateway.codecs.reply import Choice, Reply, Text, Thinking, ToolCall, Usage

CITATION = {"type": "char_location", "cited_text": "x", "document_index": 0,
            "document_title": None, "start_char_index": 0, "end_char_index": 1}  # fmt: skip
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "Weigh it.", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Sunny.", "citations": [CITATION]},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 7,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 80,
    },
}


def test_decode_keeps_signatures_citations_and_cache_usage():
    reply = codec.decode(MESSAGE)
    thinking, redacted, text, call = reply.choices[0].parts
    assert thinking == Thinking("Weigh it.", "sig-1")
    assert redacted == Thinking(redacted="opaque")
    assert text == Text("Sunny.", [CITATION])
    assert call == ToolCall("toolu_1", "weather", '{"city":"Oslo"}')
    assert (reply.choices[0].stop, reply.choices[0].raw_stop) == ("tool_use", "tool_use")
    assert reply.usage == Usage(95, 7, cache_read=80, cache_write=5)


def test_round_trip_is_the_message():
    assert codec.encode(codec.decode(MESSAGE)) == MESSAGE


def test_the_answer_tool_is_the_text():
    message = {
        **MESSAGE,
        "content": [{"type": "tool_use", "id": "t", "name": "answer", "input": {"a": 1}}],
    }
    reply = codec.decode(message, answer_tool="answer")
    assert reply.choices[0].parts == [Text('{"a":1}')]
    assert reply.choices[0].stop == "end"


def test_tool_calls_with_a_plain_stop_end_in_tool_use():
    """OpenAI-compatible servers that say `stop` beside tool calls: Claude Code runs the
    tools only on `tool_use`."""
    reply = Reply(choices=[Choice(0, [ToolCall("c", "f", "{}")], "end", "stop")])
    assert codec.encode(reply)["stop_reason"] == "tool_use"


def test_cache_usage_of_another_provider_is_shown():
    reply = Reply(choices=[Choice(0, [Text("hi")], "end")], usage=Usage(100, 5, cache_read=64))
    assert codec.encode(reply)["usage"] == {
        "input_tokens": 36,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 64,
    }


def _named(kind: str, body: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


STREAM = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 50}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "thinking", "thinking": "",
                                               "signature": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "thinking_delta", "thinking": "hm"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "signature_delta", "signature": "sig"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1,
                             "content_block": {"type": "tool_use", "id": "toolu_1",
                                               "name": "f", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta",
                       "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                       "usage": {"output_tokens": 9}}),
    ("message_stop", {"type": "message_stop"}),
]  # fmt: skip


def test_stream_decode():
    events = Decoder().feed([_named(kind, body) for kind, body in STREAM])
    assert events == [
        ev.Start("msg_1", "claude", Usage(53, 1, cache_read=50)),
        ev.PartStart(0, "thinking"),
        ev.ThinkingDelta(0, "hm"),
        ev.Signature(0, "sig"),
        ev.PartStop(0),
        ev.PartStart(1, "tool_call", id="toolu_1", name="f"),
        ev.ArgumentsDelta(1, "{}"),
        ev.PartStop(1),
        ev.Stop("tool_use", "tool_use"),
        ev.UsageEvent(Usage(53, 9, cache_read=50)),
        ev.End(),
    ]


def test_stream_round_trip_is_the_stream():
    sent = [_named(kind, body) for kind, body in STREAM]
    again = Encoder().feed(Decoder().feed(sent))
    again = [orjson.loads(e.split(b"data: ", 1)[1]) for e in again]
    assert [e["type"] for e in again if e["type"] != "ping"] == [kind for kind, _ in STREAM]
    assert again[0] == STREAM[0][1]
    final = [e for e in again if e["type"] == "message_delta"][0]
    assert final["usage"] == {
        "input_tokens": 3,
        "output_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 50,
    }
    signature = [e for e in again if e.get("delta", {}).get("type") == "signature_delta"]
    assert signature[0]["delta"]["signature"] == "sig"


def test_stream_encode_of_chat_parts_without_stops():
    """A stream decoded from chat chunks: the open block closed at the end, the stop
    reason of tool calls `tool_use` though the provider said `stop`."""
    out = Encoder("m", prompt_tokens=12).feed(
        [
            ev.PartStart(0, "tool_call", id="c", name="f"),
            ev.ArgumentsDelta(0, "{}"),
            ev.Stop("end", "stop"),
            ev.End(),
        ]
    )
    kinds = [e.split(b"\n", 1)[0] for e in out]
    assert kinds == [
        b"event: message_start", b"event: ping", b"event: content_block_start",
        b"event: content_block_delta", b"event: content_block_stop", b"event: message_delta",
        b"event: message_stop",
    ]  # fmt: skip
    delta = orjson.loads(out[-2].split(b"data: ", 1)[1])
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["input_tokens"] == 12

"""The OpenAI chat codec: chat.completion and its stream chunks ⇄ the internal language."""

from __future__ import annotations

import orjson

from gateway.codecs import events as ev
from gateway.codecs.openai_chat import reply as codec
from gateway.codecs.openai_chat.stream import Decoder, Encoder
from gateway.codecs.reply import Choice, Refusal, Reply, Text, Thinking, ToolCall, Usage

COMPLETION = {
    "id": "chatcmpl-abc",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Sunny.",
                "refusal": None,
                "reasoning_content": "Look outside.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            "logprobs": {"content": [{"token": "Sunny", "logprob": -0.1, "bytes": None,
                                      "top_logprobs": []}], "refusal": None},
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 5},
    },
}  # fmt: skip


def test_decode_reads_every_part_and_the_usage():
    reply = codec.decode(COMPLETION)
    (choice,) = reply.choices
    thinking, text, call = choice.parts
    assert thinking == Thinking("Look outside.")
    assert text.text == "Sunny." and text.logprobs[0]["token"] == "Sunny"
    assert call == ToolCall("call_1", "weather", '{"city":"Oslo"}')
    assert (choice.stop, choice.raw_stop) == ("end", "stop")
    assert reply.usage == Usage(100, 20, cache_read=64, reasoning=5)
    assert reply.extras == {"system_fingerprint": "fp_1"}


def test_deepseek_cache_hits_are_cache_reads():
    usage = codec.usage_of(
        {"prompt_tokens": 50, "completion_tokens": 2, "prompt_cache_hit_tokens": 32}
    )
    assert usage.cache_read == 32


def test_round_trip_keeps_the_completion():
    again = codec.encode(codec.decode(COMPLETION))
    assert again["choices"][0]["message"] == {
        **COMPLETION["choices"][0]["message"],
        "content": "Sunny.",
    }
    assert again["choices"][0]["logprobs"] == COMPLETION["choices"][0]["logprobs"]
    assert again["usage"]["prompt_tokens_details"] == {"cached_tokens": 64}
    assert again["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}
    assert (again["id"], again["system_fingerprint"]) == ("chatcmpl-abc", "fp_1")


def test_encode_of_another_formats_reply():
    reply = Reply(
        id="msg_1",
        model="claude",
        choices=[
            Choice(0, [Thinking("hm", "sig"), Text("No."), Refusal("I won't")], "length", "x")
        ],
        usage=Usage(10, 3, cache_read=4, cache_write=2),
    )
    out = codec.encode(reply)
    assert out["id"] == "chatcmpl-1"
    message = out["choices"][0]["message"]
    assert message["reasoning_content"] == "hm" and message["refusal"] == "I won't"
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 4


def _sse(chunk: dict) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _chunk(delta: dict, finish=None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return _sse({"id": "c1", "model": "m", "choices": [choice]})


def test_stream_decode_opens_and_closes_parts():
    call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{"}}
    more = {"index": 0, "function": {"arguments": "}"}}
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "prompt_tokens_details":
             {"cached_tokens": 8}}  # fmt: skip
    events = Decoder().feed(
        [
            _chunk({"role": "assistant", "content": ""}),
            _chunk({"reasoning_content": "hm"}),
            _chunk({"content": "Hi"}),
            _chunk({"tool_calls": [call]}),
            _chunk({"tool_calls": [more]}, "stop"),
            _sse({"id": "c1", "model": "m", "choices": [], "usage": usage}),
            b"data: [DONE]\n\n",
        ]
    )
    assert events == [
        ev.Start("c1", "m"),
        ev.PartStart(0, "thinking"),
        ev.ThinkingDelta(0, "hm"),
        ev.PartStop(0),
        ev.PartStart(1, "text"),
        ev.TextDelta(1, "Hi"),
        ev.PartStop(1),
        ev.PartStart(2, "tool_call", id="call_1", name="f"),
        ev.ArgumentsDelta(2, "{"),
        ev.ArgumentsDelta(2, "}"),
        ev.PartStop(2),
        ev.Stop("end", "stop"),
        ev.UsageEvent(Usage(9, 4, cache_read=8)),
        ev.End(),
    ]


def test_stream_round_trip():
    encoder = Encoder("m", wants_usage=True)
    sent = encoder.feed(
        [
            ev.Start("x", "m"),
            ev.PartStart(0, "text"),
            ev.TextDelta(0, "Hi"),
            ev.PartStop(0),
            ev.PartStart(1, "tool_call", id="call_1", name="f"),
            ev.ArgumentsDelta(1, "{}"),
            ev.Stop("tool_use"),
            ev.UsageEvent(Usage(5, 2, cache_read=3)),
            ev.End(),
        ]
    )
    chunks = [orjson.loads(e[6:]) for e in sent[:-1]]
    assert sent[-1] == b"data: [DONE]\n\n"
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    again = Decoder().feed(sent)
    assert [type(e) for e in again] == [
        ev.Start, ev.PartStart, ev.TextDelta, ev.PartStop, ev.PartStart, ev.ArgumentsDelta,
        ev.PartStop, ev.Stop, ev.UsageEvent, ev.End,
    ]  # fmt: skip
    assert again[-2] == ev.UsageEvent(Usage(5, 2, cache_read=3))

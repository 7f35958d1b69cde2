"""The Responses codec: the internal reply and events as output items, usage and the
Responses stream events."""

from __future__ import annotations

import orjson

from gateway.codecs import events as ev
from gateway.codecs.openai_responses import reply as codec
from gateway.codecs.openai_responses.stream import Encoder
from gateway.codecs.reply import Choice, Refusal, Reply, Text, Thinking, ToolCall, Usage


def test_output_items_in_order():
    url = {"type": "url_citation", "url": "https://x", "title": "x", "start_index": 0,
           "end_index": 1}  # fmt: skip
    anthropic_citation = {"type": "char_location", "cited_text": "x"}
    reply = Reply(
        choices=[
            Choice(
                0,
                [
                    Thinking("Weigh it.", "sig"),
                    Text("Sunny.", [url, anthropic_citation]),
                    Refusal("Not that."),
                    ToolCall("call_1", "f", "{}"),
                ],
                "tool_use",
            )
        ]
    )
    reasoning, message, call = codec.encode_output(reply)
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Weigh it."}]
    assert reasoning["encrypted_content"] == "sig" and reasoning["summary"] == []
    assert message["content"] == [
        {"type": "output_text", "text": "Sunny.", "annotations": [url], "logprobs": []},
        {"type": "refusal", "refusal": "Not that."},
    ]
    assert (call["call_id"], call["name"], call["arguments"]) == ("call_1", "f", "{}")


def test_usage_shows_cache_reads_and_writes():
    assert codec.encode_usage(Usage(100, 9, cache_read=60, cache_write=4, reasoning=2)) == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 4},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 109,
    }


class Dialect:
    """The dialect's part of a response: the object around the items, and keeping it."""

    def __init__(self) -> None:
        self.kept: list = []

    def response_object(self, request, status, output, prompt, completion, model=None, **d):
        return {"status": status, "output": output, "model": model, "usage": {
            "input_tokens": prompt, "output_tokens": completion, **d}}  # fmt: skip

    def keep(self, request, output, response) -> None:
        self.kept.append(response)


class Request:
    model = "m"
    messages: list = []


def _bodies(out: list[bytes]) -> list[dict]:
    return [orjson.loads(e.split(b"data: ", 1)[1]) for e in out]


def test_stream_events_are_numbered_and_complete():
    dialect = Dialect()
    encoder = Encoder(dialect, Request())
    out = encoder.feed(
        [
            ev.Start("x", "m"),
            ev.PartStart(0, "thinking"),
            ev.ThinkingDelta(0, "hm"),
            ev.Signature(0, "sig"),
            ev.PartStop(0),
            ev.PartStart(1, "text"),
            ev.TextDelta(1, "Hi"),
            ev.PartStart(2, "tool_call", id="call_1", name="f"),
            ev.ArgumentsDelta(2, "{}"),
            ev.Stop("end"),
            ev.UsageEvent(Usage(9, 3, cache_read=8)),
            ev.End(),
        ]
    )
    bodies = _bodies(out)
    assert [b["sequence_number"] for b in bodies] == list(range(len(bodies)))
    assert [b["type"] for b in bodies] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    done = bodies[-1]["response"]
    assert [i["type"] for i in done["output"]] == ["reasoning", "message", "function_call"]
    assert done["output"][0]["encrypted_content"] == "sig"
    assert done["usage"]["cached"] == 8
    assert dialect.kept == [done]


def test_a_length_stop_is_incomplete():
    out = Encoder(Dialect(), Request()).feed(
        [ev.TextDelta(0, "Hi"), ev.Stop("length"), ev.UsageEvent(Usage(1, 1)), ev.End()]
    )
    assert _bodies(out)[-1]["type"] == "response.incomplete"

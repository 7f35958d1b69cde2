"""The SSE filter: event splitting, usage capture, hiding the usage-only chunk."""

from __future__ import annotations

import json

from gateway.providers.openai_sse import SSEFilter


def event(payload) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


CONTENT = event({"choices": [{"index": 0, "delta": {"content": "Hi"}}], "usage": None})
USAGE = event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
DONE = b"data: [DONE]\n\n"


def test_usage_chunk_hidden_and_read():
    sse = SSEFilter(hide_usage_chunk=True)
    assert sse.feed(CONTENT + USAGE + DONE) == [CONTENT, DONE]
    assert sse.usage == {"prompt_tokens": 3, "completion_tokens": 1}
    assert sse.done


def test_usage_chunk_kept_when_the_client_asked():
    sse = SSEFilter(hide_usage_chunk=False)
    assert sse.feed(CONTENT + USAGE + DONE) == [CONTENT, USAGE, DONE]


def test_events_split_across_reads_and_crlf():
    sse = SSEFilter(hide_usage_chunk=True)
    data = (CONTENT + USAGE).replace(b"\n", b"\r\n")
    out = []
    for i in range(0, len(data), 7):
        out += sse.feed(data[i : i + 7])
    assert out == [CONTENT]
    assert sse.usage["completion_tokens"] == 1
    assert sse.completion_text() == "Hi"


def test_null_usage_on_content_chunks_is_not_usage():
    sse = SSEFilter(hide_usage_chunk=True)
    sse.feed(CONTENT)
    assert sse.usage is None

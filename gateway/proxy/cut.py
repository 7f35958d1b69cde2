"""A stream cut at its budget: once the answer streamed passes the tokens its budget
reservation pays for, the client's stream is ended as the dialect ends an answer that
reached its length limit (OpenAI `finish_reason: "length"`, Anthropic `stop_reason:
"max_tokens"`, a Responses `response.incomplete`), so an upstream that ignores
`max_tokens` cannot spend past the budget."""

from __future__ import annotations

import time

import orjson

from gateway import tokens
from gateway.codecs import events as ev
from gateway.codecs.usage import of_booked
from gateway.dialects.base import Dialect, ProxyRequest
from gateway.ledger.usage import Usage
from gateway.providers.base import StreamReader


class AnswerMeter:
    """Counts the answer's tokens as the stream passes (its text, tool calls and reasoning:
    all that the upstream bills as output), cheaply: the text is tokenized only once the
    bytes received could hold the cap (a token is at least one byte)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.counted = 0  # tokens in the text read so far
        self._read = 0  # characters of the text already counted
        self._unread_bytes = 0  # stream bytes received since the last count

    def passed(self, chunk: bytes, reader: StreamReader) -> bool:
        """Whether the answer has reached the cap, after this chunk."""
        self._unread_bytes += len(chunk)
        if self.counted + self._unread_bytes < self.cap:
            return False
        self._unread_bytes = 0
        text = reader.billable_text()
        self.counted += tokens.count_text(text[self._read :])
        self._read = len(text)
        return self.counted >= self.cap


def length_stop(
    dialect: Dialect, request: ProxyRequest, translator, reader: StreamReader, usage: Usage
) -> bytes:
    """The events that end the client's stream at the length limit, in its dialect."""
    openai_usage = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if translator is not None:  # the dialect's encoder ends it
        ending = [ev.Stop("length", "length"), ev.UsageEvent(of_booked(usage)), ev.End()]
        return b"".join(getattr(translator, "encoder", translator).feed(ending))
    if dialect.format == "openai":
        completions = request.operation == "completions"
        choice = {"index": 0, "finish_reason": "length"}
        choice.update({"text": ""} if completions else {"delta": {}})
        chunk = {
            "id": "cut-" + str(int(time.time() * 1000)),
            "object": "text_completion" if completions else "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.model,
            "choices": [choice],
        }
        events = [_sse(chunk)]
        if request.wants_usage:
            events.append(_sse({**chunk, "choices": [], "usage": openai_usage}))
        events.append(b"data: [DONE]\n\n")
        return b"".join(events)
    if dialect.format == "anthropic":
        out = []
        block = getattr(reader, "open_block", None)
        if block is not None:
            stop = {"type": "content_block_stop", "index": block}
            out.append(_named("content_block_stop", stop))
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": usage.output_tokens},
        }
        out.append(_named("message_delta", delta))
        out.append(_named("message_stop", {"type": "message_stop"}))
        return b"".join(out)
    # The Responses API, relayed from an upstream that speaks it.
    response = dialect.response_object(
        request, "incomplete", [], usage.input_tokens, usage.output_tokens
    )
    started = getattr(reader, "response", None)
    if isinstance(started, dict) and started.get("id"):
        response["id"] = started["id"]
    number = getattr(reader, "sequence", 0)
    body = {"type": "response.incomplete", "sequence_number": number, "response": response}
    return _named("response.incomplete", body)


def _sse(chunk: dict) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _named(kind: str, body: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"

"""Reading an OpenAI SSE stream as it is relayed: event by event, usage captured (and
hidden from a client that did not ask for it), an upstream's own `cost` dropped."""

from __future__ import annotations

import contextlib
import re

import orjson

from gateway.ledger.usage import Usage

DONE = b"data: [DONE]"
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_COST = b'"cost"'


class SSEFilter:
    """Splits upstream bytes into SSE events, reads usage, drops the usage-only chunk.

    The gateway asks upstreams for `stream_options.include_usage`; a client that did not
    ask must not see the extra `choices: []` chunk, so it is dropped here.
    """

    def __init__(self, hide_usage_chunk: bool) -> None:
        self.hide_usage_chunk = hide_usage_chunk
        self.usage: dict | None = None
        self.done = False
        self.sent_events: list[bytes] = []
        self._buffer = b""
        # The text of the events read so far (read as asked: a stream's length is watched
        # while it passes, and re-reading every event each time would be quadratic).
        self._text: list[str] = []
        self._billed: list[str] = []  # the text, tool calls and reasoning, in order
        self._read_events = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Complete events (each with its blank line) that should go to the client."""
        self._buffer += data
        if b"\r" in data:
            # Normalised on the buffer: a CRLF may straddle two reads.
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        events = []
        while (end := self._buffer.find(b"\n\n")) != -1:
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            kept = self._keep(event)
            if kept is not None:
                events.append(kept + b"\n\n")
        return events

    def _keep(self, event: bytes) -> bytes | None:
        """The event as the client gets it, or None to drop it."""
        if event.startswith(DONE):
            self.done = True
            return event
        if _USAGE.search(event) or _COST in event:
            chunk = _parse_data(event)
            if chunk is not None:
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    self.usage = usage
                changed = strip_cost(chunk)
                if self.hide_usage_chunk and "usage" in chunk:
                    # Some upstreams (LiteLLM) send usage with `choices: [{"delta": {}}]`.
                    if not _carries_anything(chunk.get("choices")):
                        return None
                    del chunk["usage"]
                    changed = True
                if changed:  # (a chunk nested too deep to write back goes as sent)
                    with contextlib.suppress(orjson.JSONEncodeError):
                        event = b"data: " + orjson.dumps(chunk)
        self.sent_events.append(event)
        return event

    def read_usage(self) -> Usage | None:
        """The usage the upstream reported, if it did."""
        return usage_of(self.usage)

    def completion_text(self) -> str:
        """The content sent so far, for counting tokens of an unfinished stream."""
        self._read_sent()
        return "".join(self._text)

    def billable_text(self) -> str:
        """The content, tool calls and reasoning sent so far (all billed as output)."""
        self._read_sent()
        return "".join(self._billed)

    def _read_sent(self) -> None:
        fresh, self._read_events = self.sent_events[self._read_events :], len(self.sent_events)
        for event in fresh:
            chunk = _parse_data(event)
            for choice in (chunk or {}).get("choices") or ():
                if isinstance(choice, dict):
                    self._read_choice(choice)

    def _read_choice(self, choice: dict) -> None:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            if isinstance(choice.get("text"), str):  # a legacy text completion
                self._text.append(choice["text"])
                self._billed.append(choice["text"])
            return
        # Reasoning: `reasoning_content` (DeepSeek, vLLM), `reasoning` (OpenRouter, Ollama).
        for name in ("reasoning_content", "reasoning"):
            if isinstance(delta.get(name), str):
                self._billed.append(delta[name])
        if isinstance(delta.get("content"), str):
            self._text.append(delta["content"])
            self._billed.append(delta["content"])
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                self._billed += _call_text(call.get("function"))
        self._billed += _call_text(delta.get("function_call"))  # the legacy single call


def _call_text(function: object) -> list[str]:
    """A streamed function call's name and arguments (the pieces it carries)."""
    if not isinstance(function, dict):
        return []
    return [function[k] for k in ("name", "arguments") if isinstance(function.get(k), str)]


def usage_of(usage: object) -> Usage | None:
    """Read an OpenAI `usage` object; None if it is missing or malformed."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if completion is None and isinstance(usage.get("total_tokens"), int):
        completion = usage["total_tokens"] - prompt if isinstance(prompt, int) else None
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, max(0, completion), cache_read=min(max(0, cached_of(usage)), prompt))


def cached_of(usage: dict, details: str = "prompt_tokens_details") -> int:
    """Prompt tokens read from the upstream's prompt cache (part of its prompt tokens):
    OpenAI's `<details>.cached_tokens` (`input_tokens_details` in the Responses API), or
    DeepSeek's `prompt_cache_hit_tokens`; the larger where both are given."""
    found = usage.get(details)
    counts = (found.get("cached_tokens") if isinstance(found, dict) else None,)
    counts += (usage.get("prompt_cache_hit_tokens"),)
    return max((n for n in counts if isinstance(n, int) and not isinstance(n, bool)), default=0)


def strip_cost(chunk: dict) -> bool:
    """Drop an upstream's own `cost` (LiteLLM adds one, at the top or in `usage`): the
    client's price is KeyRelay's to state. True when something was removed."""
    removed = chunk.pop("cost", None) is not None
    usage = chunk.get("usage")
    if isinstance(usage, dict) and "cost" in usage:
        del usage["cost"]
        removed = True
    return removed


def _carries_anything(choices) -> bool:
    """Whether a chunk's choices hold anything for the client: a delta with a value, a
    finish reason or log probabilities."""
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            return True
        if choice.get("finish_reason") is not None or choice.get("logprobs") is not None:
            return True
        if choice.get("text"):  # a legacy text completion
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and any(v not in (None, "", [], {}) for v in delta.values()):
            return True
    return False


def _parse_data(event: bytes) -> dict | None:
    """The JSON of an event's `data:` lines, or None."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    try:
        value = orjson.loads(b"".join(lines))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

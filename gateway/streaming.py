"""Relaying an OpenAI SSE stream: event by event, usage captured, hidden when not asked for."""

from __future__ import annotations

import json
import re

import orjson

DONE = b"data: [DONE]"
_USAGE = re.compile(rb'"usage"\s*:\s*\{')


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

    def feed(self, data: bytes) -> list[bytes]:
        """Complete events (each with its blank line) that should go to the client."""
        self._buffer += data
        if b"\r" in data:
            # Normalised on the buffer: a CRLF may straddle two reads.
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        events = []
        while (end := self._buffer.find(b"\n\n")) != -1:
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            if self._keep(event):
                events.append(event + b"\n\n")
        return events

    def _keep(self, event: bytes) -> bool:
        if event.startswith(DONE):
            self.done = True
            return True
        if _USAGE.search(event):
            chunk = _parse_data(event)
            if chunk is not None:
                self.usage = chunk.get("usage")
                if self.hide_usage_chunk and not chunk.get("choices"):
                    return False
        self.sent_events.append(event)
        return True

    def completion_text(self) -> str:
        """The content sent so far, for counting tokens of an unfinished stream."""
        parts = []
        for event in self.sent_events:
            chunk = _parse_data(event)
            for choice in (chunk or {}).get("choices") or ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    parts.append(delta["content"])
        return "".join(parts)


def _parse_data(event: bytes) -> dict | None:
    """The JSON of an event's `data:` lines, or None."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    try:
        value = orjson.loads(b"".join(lines))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def error_event(message: str, code: str) -> bytes:
    """An SSE event telling the client the stream broke (the OpenAI SDK raises on it)."""
    body = {"error": {"message": message, "type": "upstream_error", "code": code, "param": None}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"

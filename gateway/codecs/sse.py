"""Server-sent events as the stream codecs read and write them."""

from __future__ import annotations

import orjson


def data_of(event: bytes) -> bytes | None:
    """The payload of an SSE event's `data:` lines, or None."""
    if event.startswith(b"data:"):  # the usual event: one data line (checked cheaply)
        body = event[5:].rstrip(b"\n")
        if b"\n" not in body:
            return body.strip()
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"".join(lines) if lines else None


def json_of(event: bytes, data: bytes | None = None) -> dict | None:
    """The JSON object an event carries (`data`: its payload, if read already), or None."""
    data = data_of(event) if data is None else data
    if data is None:
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def named(kind: str, body: dict) -> bytes:
    """An event with a name (Anthropic's and the Responses API's streams)."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


def data(body: dict) -> bytes:
    """An unnamed event (OpenAI chat's stream)."""
    return b"data: " + orjson.dumps(body) + b"\n\n"

"""Texts about provider keys that the proxy's path writes too (kept free of the selector,
which imports the store): who `system` is, and the upstream's message in a stored error."""

from __future__ import annotations

import json
import re

# The actor of changes KeyRelay makes by itself (auto-disable, auth failure), as audited.
SYSTEM = "system"

_HTTP_ERROR = re.compile(r"^HTTP (\d{3}): ?(.*)$", re.S)
_MESSAGE = re.compile(r'"(?:message|detail|error_description)"\s*:\s*"((?:[^"\\]|\\.)*)("?)')


def upstream_message(error: str | None) -> str | None:
    """The upstream's own message from a stored `HTTP 429: {"error": {...}}` text (the body
    may be cut short), else the text itself: `HTTP 429: Rate limit reached for gpt-4o`."""
    if not error:
        return None
    match = _HTTP_ERROR.match(error.strip())
    if match is None:
        return error.strip()
    status, body = match.groups()
    message = _json_message(body)
    if message is None:
        found = _MESSAGE.search(body)
        if found is not None:
            message = _unescape(found.group(1)) + ("" if found.group(2) else "…")
    if message is None:
        message = body.strip() or "no message"
    return f"HTTP {status}: {message}"


def _json_message(body: str) -> str | None:
    """error.message / message / detail / error (a string) of a whole JSON body."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Google answers [{"error": …}]
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        data = error
    elif isinstance(error, str):
        return error
    for field in ("message", "detail", "error_description"):
        if isinstance(data.get(field), str):
            return data[field]
    return None


def _unescape(text: str) -> str:
    try:
        return json.loads(f'"{text}"')
    except ValueError:
        return text

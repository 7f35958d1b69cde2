"""The client's request headers KeyRelay reads. Those an upstream honours are sent on to
keys of the kinds that honour them (each adapter's `forwarded_headers`: `anthropic-beta`
to Anthropic keys, `openai-beta` to OpenAI-compatible ones); a client's session id pins
its conversation to a key (gateway/proxy/pins.py). No other header of the client's goes
upstream: not its credentials, not hop-by-hop headers, not its SDK's telemetry
(`x-stainless-*`), not `OpenAI-Organization` / `-Project` (they belong to the key)."""

from __future__ import annotations

import re

from gateway.errors import invalid_request
from gateway.providers import ADAPTERS

# Session ids clients send: Claude Code's, and the Codex CLI's (`session_id`, which a
# WSGI server hands over as `session-id`).
SESSION_HEADERS = ("x-claude-code-session-id", "session-id")
FORWARDED_HEADERS = tuple(sorted({h for kind in ADAPTERS.values() for h in kind.forwarded_headers}))
# A header's values, joined, longer than this are refused: no upstream honours such a value,
# and it would be sent on to every key tried.
MAX_CHARS = 4096
# What a header value may not hold (RFC 9110: control characters but the tab); such a value
# could not be sent on as it came.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def read(headers) -> dict[str, str]:
    """The headers KeyRelay reads, lower-case, each header's values joined by commas
    (`headers`: the request's, with `getlist(name)` giving one header's values); a 400
    naming a header whose value cannot be sent on."""
    found = {}
    for name in (*FORWARDED_HEADERS, *SESSION_HEADERS):
        values = [v.strip() for v in headers.getlist(name) if v.strip()]
        if values:
            found[name] = _checked(name, ",".join(values))
    return found


def _checked(name: str, value: str) -> str:
    """The value, or a 400 naming the header (a control character, or too long)."""
    if _CONTROL.search(value):
        raise invalid_request(f"The header '{name}' holds a control character.", param=name)
    if len(value) > MAX_CHARS:
        raise invalid_request(
            f"The header '{name}' is longer than {MAX_CHARS} characters (all its values joined).",
            param=name,
        )
    return value

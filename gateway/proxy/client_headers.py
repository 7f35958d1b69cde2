"""The client's request headers KeyRelay reads. Those an upstream honours are sent on to
keys of the kinds that honour them (each adapter's `forwarded_headers`: `anthropic-beta`
to Anthropic keys, `openai-beta` to OpenAI-compatible ones); a client's session id pins
its conversation to a key (gateway/proxy/pins.py). No other header of the client's goes
upstream: not its credentials, not hop-by-hop headers, not its SDK's telemetry
(`x-stainless-*`), not `OpenAI-Organization` / `-Project` (they belong to the key)."""

from __future__ import annotations

from gateway.providers import ADAPTERS

# Session ids clients send: Claude Code's, and the Codex CLI's (`session_id`, which a
# WSGI server hands over as `session-id`).
SESSION_HEADERS = ("x-claude-code-session-id", "session-id")
FORWARDED_HEADERS = tuple(sorted({h for kind in ADAPTERS.values() for h in kind.forwarded_headers}))


def read(headers) -> dict[str, str]:
    """The headers KeyRelay reads, lower-case, each header's values joined by commas
    (`headers`: the request's, with `getlist(name)` giving one header's values)."""
    found = {}
    for name in (*FORWARDED_HEADERS, *SESSION_HEADERS):
        values = [v.strip() for v in headers.getlist(name) if v.strip()]
        if values:
            found[name] = ",".join(values)
    return found

"""The `openai` provider: any OpenAI-compatible API at a configurable base URL.

The gateway's own request format is OpenAI chat, so nothing is translated: the body goes
up as it is (streams ask for `include_usage`, to book them), and the answer comes back as
the upstream's bytes, read on the side for usage, its text and its error message.
"""

from __future__ import annotations

import orjson

from gateway.policy import Outcome
from gateway.providers.base import (
    ProviderAdapter,
    Target,
    Timeouts,
    TransportError,
    UpstreamReply,
)
from gateway.providers.openai_sse import SSEFilter, strip_cost, usage_of


class OpenAIAdapter(ProviderAdapter):
    """Talks the OpenAI wire protocol as is."""

    name = "openai"

    def _headers(self, target: Target) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {target.secret}",
            "Content-Type": "application/json",
        }

    def _post(self, target: Target, path: str, body: dict, timeouts: Timeouts):
        return self.http.request(
            "POST", f"{target.base_url}{path}", self._headers(target), timeouts, orjson.dumps(body)
        )

    def chat(self, target: Target, body: dict, timeouts: Timeouts, native=None) -> UpstreamReply:
        return self._whole(target, "/chat/completions", body, timeouts)

    def chat_stream(
        self, target: Target, body: dict, timeouts: Timeouts, wants_usage: bool, native=None
    ) -> UpstreamReply:
        return self._streamed(target, "/chat/completions", body, timeouts, wants_usage)

    def embeddings(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        return self._whole(target, "/embeddings", body, timeouts)

    def completions(
        self, target: Target, body: dict, timeouts: Timeouts, stream: bool, wants_usage: bool
    ) -> UpstreamReply:
        if stream:
            return self._streamed(target, "/completions", body, timeouts, wants_usage)
        return self._whole(target, "/completions", body, timeouts)

    def _whole(self, target: Target, path: str, body: dict, timeouts: Timeouts) -> UpstreamReply:
        response = self._post(target, path, body, timeouts)
        reply = completion_reply(response.status, response.headers, response.read())
        if reply.status < 300 and reply.error is not None:  # unreadable: the next key
            raise TransportError(Outcome.BAD_RESPONSE, reply.error)
        return reply

    def _streamed(
        self, target: Target, path: str, body: dict, timeouts: Timeouts, wants_usage: bool
    ) -> UpstreamReply:
        asked = body.get("stream_options") or {}
        sent = {**body, "stream_options": {**asked, "include_usage": True}}
        response = self._post(target, path, sent, timeouts)
        if response.status >= 300:
            return error_reply(response.status, response.headers, response.read())
        return UpstreamReply(
            response.status,
            response.headers,
            chunks=response.chunks(),
            _release=response.abandon,
            stream=SSEFilter(hide_usage_chunk=not wants_usage),
        )

    def list_models(self, target: Target, timeouts: Timeouts) -> UpstreamReply:
        response = self.http.request(
            "GET", f"{target.base_url}/models", self._headers(target), timeouts
        )
        body = response.read()
        if response.status >= 300:
            return error_reply(response.status, response.headers, body)
        return UpstreamReply(response.status, response.headers, body)

    def model_ids(self, reply: UpstreamReply) -> list[str] | None:
        data = (json_object(reply.body) or {}).get("data")
        if not isinstance(data, list):
            return None
        ids = {m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)}
        return sorted(ids)


def completion_reply(status: int, headers: dict[str, str], body: bytes) -> UpstreamReply:
    """A chat.completion answer, normalized (a 2xx that is not a JSON object: `error`)."""
    if status >= 300:
        return error_reply(status, headers, body)
    parsed = json_object(body)
    if parsed is None:
        return UpstreamReply(status, headers, body, error="upstream answered 2xx without JSON")
    if b'"cost"' in body and strip_cost(parsed):  # an upstream's own price is not passed on
        body = _reencoded(parsed, body)
    model = parsed.get("model")
    return UpstreamReply(
        status,
        headers,
        body,
        usage=usage_of(parsed.get("usage")),
        text=_message_text(parsed),
        model=model if isinstance(model, str) else None,
    )


def error_reply(status: int, headers: dict[str, str], body: bytes) -> UpstreamReply:
    """An error answer: the body as it came, and the message found in it."""
    parsed = json_object(body)
    error = parsed.get("error") if parsed is not None else None
    return UpstreamReply(
        status,
        headers,
        body,
        error=body[:500].decode("utf-8", "replace") or f"upstream answered {status}",
        error_shaped=isinstance(error, dict),
    )


def json_object(data: bytes) -> dict | None:
    try:
        value = orjson.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _reencoded(value: dict, original: bytes) -> bytes:
    """The value as JSON again; the original bytes if it cannot be (nested too deep)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return original


def _message_text(completion: dict) -> str:
    """All choice texts of a chat.completion (or a legacy text_completion), for estimating
    its tokens."""
    texts = []
    for choice in completion.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            texts.append(message["content"])
        elif isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    return "".join(texts)

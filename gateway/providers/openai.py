"""The `openai` provider: any OpenAI-compatible API at a configurable base URL."""

from __future__ import annotations

import orjson

from gateway.providers.base import ProviderAdapter, Target, Timeouts, UpstreamReply


class OpenAIAdapter(ProviderAdapter):
    """Talks the OpenAI wire protocol as is; no translation needed."""

    name = "openai"

    def _headers(self, target: Target) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {target.secret}",
            "Content-Type": "application/json",
        }

    def chat(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        response = self.http.request(
            "POST",
            f"{target.base_url}/chat/completions",
            self._headers(target),
            timeouts,
            orjson.dumps(body),
        )
        return UpstreamReply(response.status, response.headers, response.read())

    def chat_stream(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        response = self.http.request(
            "POST",
            f"{target.base_url}/chat/completions",
            self._headers(target),
            timeouts,
            orjson.dumps(body),
        )
        if response.status >= 300:
            return UpstreamReply(response.status, response.headers, response.read())
        return UpstreamReply(
            response.status,
            response.headers,
            chunks=response.chunks(),
            _release=response.abandon,
        )

    def list_models(self, target: Target, timeouts: Timeouts) -> UpstreamReply:
        response = self.http.request(
            "GET", f"{target.base_url}/models", self._headers(target), timeouts
        )
        return UpstreamReply(response.status, response.headers, response.read())

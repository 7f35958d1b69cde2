"""OpenAI chat completions (`POST /v1/chat/completions`): the gateway's own format, so an
OpenAI-format upstream's answer and stream are relayed as they came."""

from __future__ import annotations

import json

import orjson

from gateway.codecs.openai_chat import reply as codec
from gateway.codecs.openai_chat.stream import Encoder
from gateway.codecs.wire import reply_of
from gateway.dialects.base import Dialect, ProxyRequest
from gateway.errors import GatewayError
from gateway.providers.base import UpstreamReply
from gateway.validation import validate_chat

FORMAT = "openai"  # the wire format of its bodies and streams


class OpenAIChat(Dialect):
    name = "openai_chat"
    endpoint = "chat.completions"

    def parse(self, body: object) -> ProxyRequest:
        validate_chat(body)
        stream = body.get("stream") is True
        asked = body.get("stream_options") or {}
        return ProxyRequest(
            self.endpoint,
            body["model"],
            stream,
            body,
            wants_usage=bool(asked.get("include_usage")),
            answer_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            choices=body.get("n") or 1,
            messages=body["messages"],
        )

    def render(self, reply: UpstreamReply, request: ProxyRequest | None = None) -> bytes:
        if reply.format == FORMAT and (reply.status < 300 or reply.error_shaped):
            return reply.body  # passthrough
        if reply.status < 300:
            return orjson.dumps(codec.encode(reply_of(reply), request.model if request else ""))
        message = reply.error or f"upstream answered {reply.status}"
        error = GatewayError(reply.status, f"Upstream rejected the request: {message}")
        return json.dumps(error.body()).encode()

    def stream_translator(self, request: ProxyRequest):
        return Encoder(request.model, request.wants_usage)

    def stream_error(self, message: str, code: str, request=None, progress=None) -> bytes:
        """An SSE event the OpenAI SDK raises on."""
        body = {"error": {"message": message, "type": "upstream_error", "code": code}}
        body["error"]["param"] = None
        return b"data: " + json.dumps(body).encode() + b"\n\n"

"""Anthropic Messages (`POST /v1/messages`): what the Anthropic SDK and Claude Code send.

The request is decoded into the gateway's internal request (gateway/codecs/anthropic),
which an upstream of another format is sent encoded; the answer comes back as a whole
`message`, or the exact event sequence of a Messages stream (`message_start` with usage,
`content_block_start` / `_delta` / `_stop` per block with correct indexes across text,
thinking and tool_use blocks, `input_json_delta` for tool arguments, `message_delta` with
the stop reason and usage, `message_stop`). Errors take Anthropic's shape.
"""

from __future__ import annotations

import orjson

from gateway import tokens
from gateway.codecs.anthropic import reply as codec
from gateway.codecs.anthropic.request import decode
from gateway.codecs.anthropic.stream import Encoder
from gateway.codecs.transcript import lines
from gateway.codecs.wire import reply_of
from gateway.dialects.base import Dialect, ProxyRequest
from gateway.errors import GatewayError, invalid_request
from gateway.providers.base import UpstreamReply

FORMAT = "anthropic"  # the wire format of its bodies and streams

# HTTP status → Anthropic error type
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_json(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


class AnthropicMessages(Dialect):
    name = "anthropic_messages"
    endpoint = "messages"
    format = FORMAT

    # -- the request ------------------------------------------------------------------

    def parse(self, body: object) -> ProxyRequest:
        typed = decode(body)  # checks the body's shape: a 400 naming the field
        request = ProxyRequest(
            self.endpoint,
            typed.model,
            typed.stream,
            {"model": typed.model},  # the request is `typed` (and `native`), no chat body
            wants_usage=True,  # the translator reads it; the client never sees OpenAI's chunk
            answer_tokens=typed.max_tokens,
            native=(FORMAT, body),  # an Anthropic upstream gets the client's own body
            typed=typed,  # what an upstream of another format gets, encoded
            extra={"names": typed.names},  # a refusal names the client's field
        )
        ignored = ", ".join(
            f"tools[{number}] ({tool.kind})"
            for number, tool in enumerate(typed.tools)
            if tool.kind != "function"
        )
        if ignored:  # server tools: chat has none; told in a header (relay.py)
            request.extra["ignored"] = ignored
        return request

    def count_tokens(self, body: object) -> int:
        """`POST /v1/messages/count_tokens`: the prompt's tokens, counted locally (its
        texts, its tool calls' names and arguments, and its function tools)."""
        if not isinstance(body, dict):
            raise invalid_request("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise invalid_request("model: a non-empty string is required.", "model")
        typed = decode({**body, "max_tokens": 1})  # counting asks for no answer
        total = tokens.count_request(typed)
        for line in lines(typed):
            for call in line.calls:
                total += tokens.count_text(call.name) + tokens.count_text(call.arguments)
        functions = [_function(tool) for tool in typed.tools if tool.kind == "function"]
        if functions:
            total += tokens.count_text(orjson.dumps(functions).decode())
        return total

    # -- the answer -------------------------------------------------------------------

    def render(self, reply: UpstreamReply, request: ProxyRequest | None = None) -> bytes:
        if reply.format == FORMAT and (reply.status < 300 or reply.error_shaped):
            return reply.body  # an Anthropic upstream: passthrough
        if reply.status >= 300:
            return orjson.dumps(error_json(reply.status, _upstream_message(reply)))
        return orjson.dumps(codec.encode(reply_of(reply), request.model if request else ""))

    def stream_translator(self, request: ProxyRequest):
        return Encoder(request.model, request.quick_prompt_estimate())

    def stream_error(self, message: str, code: str, request=None, progress=None) -> bytes:
        return _event("error", error_json(502, message))

    def error_body(self, error: GatewayError) -> dict:
        return error_json(error.status, error.message)


# -- helpers ----------------------------------------------------------------------------


def _function(tool) -> dict:
    """A function tool as counted: as OpenAI chat writes it (the count's convention)."""
    function = {"name": tool.name, "parameters": tool.parameters}
    if tool.description is not None:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _upstream_message(reply: UpstreamReply) -> str:
    """The upstream's error message, out of its JSON when it has one."""
    try:
        parsed = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    return reply.error or f"upstream answered {reply.status}"


def _event(name: str, body: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"

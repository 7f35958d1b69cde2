"""Anthropic Messages (`POST /v1/messages`): what the Anthropic SDK and Claude Code send.

The request is translated into the gateway's OpenAI chat form (system, turns, images,
tools and tool results, stop sequences, sampling, the user), and the answer back: a whole
`message`, or the exact event sequence of a Messages stream (`message_start` with usage,
`content_block_start` / `_delta` / `_stop` per block with correct indexes across text,
thinking and tool_use blocks, `input_json_delta` for tool arguments, `message_delta` with
the stop reason and usage, `message_stop`). Errors take Anthropic's shape.
"""

from __future__ import annotations

import re
import uuid

import orjson

from gateway import tokens
from gateway.codecs.anthropic import reply as codec
from gateway.codecs.anthropic.request import check_body, decode
from gateway.codecs.anthropic.stream import Encoder
from gateway.codecs.wire import reply_of
from gateway.dialects.base import Dialect, ProxyRequest
from gateway.errors import GatewayError, invalid_request
from gateway.providers.base import UpstreamReply

FORMAT = "anthropic"  # the wire format of its bodies and streams

# Models that take OpenAI's `reasoning_effort` (others refuse the field): where a client's
# `thinking` goes. Their reasoning comes back as thinking blocks when the upstream sends it
# (`reasoning_content`).
REASONING_MODELS = re.compile(r"^(o\d|gpt-5)")

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
        model, max_tokens = typed.model, typed.max_tokens
        stream = body.get("stream") is True
        messages = _messages(body)
        chat: dict = {"model": model, "messages": messages, "max_tokens": max_tokens}
        if stream:
            chat["stream"] = True
        for name in ("temperature", "top_p"):
            value = body.get(name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise invalid_request(f"{name}: a number is expected.", name)
                chat[name] = value
        if typed.sampling.stop:
            chat["stop"] = typed.sampling.stop
        if typed.sampling.top_k is not None:  # OpenAI-compatible servers that sample so take it
            chat["top_k"] = typed.sampling.top_k
        effort = _effort(body)
        if effort is not None and REASONING_MODELS.match(model.rsplit("/", 1)[-1]):
            chat["reasoning_effort"] = effort
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
            chat["user"] = metadata["user_id"]
        tools = body.get("tools")
        if tools:
            chat["tools"] = _tools(tools)
            choice = _tool_choice(body.get("tool_choice"))
            if choice is not None:
                chat["tool_choice"] = choice
                parallel = (body.get("tool_choice") or {}).get("disable_parallel_tool_use")
                if parallel is True:
                    chat["parallel_tool_calls"] = False
        request = ProxyRequest(
            self.endpoint,
            model,
            stream,
            chat,
            wants_usage=True,  # the translator reads it; the client never sees OpenAI's chunk
            answer_tokens=max_tokens,
            messages=messages,
            native=(FORMAT, body),  # an Anthropic upstream gets the client's own body
            typed=typed,  # what an upstream of another format gets, re-encoded
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
        """`POST /v1/messages/count_tokens`: the prompt's tokens, counted locally."""
        if not isinstance(body, dict):
            raise invalid_request("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise invalid_request("model: a non-empty string is required.", "model")
        check_body(body)
        messages = _messages(body)
        total = tokens.count_prompt(messages)
        for message in messages:
            for call in message.get("tool_calls") or ():
                total += tokens.count_text(call["function"]["name"])
                total += tokens.count_text(call["function"]["arguments"])
        if body.get("tools"):
            total += tokens.count_text(orjson.dumps(_tools(body["tools"])).decode())
        return total

    # -- the answer -------------------------------------------------------------------

    def render(self, reply: UpstreamReply, request: ProxyRequest | None = None) -> bytes:
        if reply.format == FORMAT and (reply.status < 300 or reply.error_shaped):
            return reply.body  # an Anthropic upstream: passthrough
        if reply.status >= 300:
            return orjson.dumps(error_json(reply.status, _upstream_message(reply)))
        return orjson.dumps(codec.encode(reply_of(reply), request.model if request else ""))

    def stream_translator(self, request: ProxyRequest):
        return Encoder(request.model, tokens.quick_prompt_estimate(request.messages))

    def stream_error(self, message: str, code: str, request=None, progress=None) -> bytes:
        return _event("error", error_json(502, message))

    def error_body(self, error: GatewayError) -> dict:
        return error_json(error.status, error.message)


# -- translation helpers ----------------------------------------------------------------


def _messages(body: dict) -> list[dict]:
    """Anthropic's system and turns as OpenAI chat messages."""
    out: list[dict] = []
    system = body.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if text:
            out.append({"role": "system", "content": text})
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise invalid_request("messages: a non-empty array is required.", "messages")
    for number, turn in enumerate(turns):
        where = f"messages[{number}]"
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant", "system"):
            raise invalid_request(f"{where}: an object with role user or assistant.", where)
        content = turn.get("content")
        if turn["role"] == "system":  # Claude Code puts its environment here
            text = _text_of(content, where)
            if text:
                out.append({"role": "system", "content": text})
        elif isinstance(content, str):
            out.append({"role": turn["role"], "content": content})
        elif isinstance(content, list):
            if turn["role"] == "user":
                out += _user_turn(content, where)
            else:
                out.append(_assistant_turn(content, where))
        else:
            raise invalid_request(f"{where}.content: a string or an array of blocks.", where)
    return out


def _user_turn(blocks: list, where: str) -> list[dict]:
    """Tool results become `tool` messages (first: they answer the previous turn's calls);
    text and images one `user` message."""
    results: list[dict] = []
    parts: list[dict] = []
    for number, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise invalid_request(f"{where}.content[{number}]: an object.", where)
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, where)}})
        elif kind == "tool_result":
            content = block.get("content")
            text = content if isinstance(content, str) else _text_of(content or [], where)
            if block.get("is_error"):
                text = f"Error: {text}"
            results.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}
            )
        elif kind == "document":
            source = block.get("source") or {}
            if source.get("type") == "text":
                parts.append({"type": "text", "text": str(source.get("data", ""))})
        # thinking, redacted_thinking and unknown blocks carry nothing for the upstream
    out = results
    if parts:
        only_text = all(part["type"] == "text" for part in parts)
        content = "\n".join(p["text"] for p in parts) if only_text else parts
        out.append({"role": "user", "content": content})
    return out


def _assistant_turn(blocks: list, where: str) -> dict:
    texts: list[str] = []
    calls: list[dict] = []
    for number, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise invalid_request(f"{where}.content[{number}]: an object.", where)
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id") or _tool_id()),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: object) -> list[dict]:
    if not isinstance(tools, list):
        raise invalid_request("tools: an array of tools.", "tools")
    out = []
    for number, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise invalid_request(f"tools[{number}]: an object with a name.", "tools")
        if tool.get("type") not in (None, "custom") and "input_schema" not in tool:
            continue  # Anthropic's server tools (web search, …) have no OpenAI equivalent
        function = {
            "name": tool["name"],
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _effort(body: dict) -> str | None:
    """`thinking` as a reasoning effort: a budget of tokens (`enabled`), or the effort an
    `adaptive` request names in `output_config` (as Claude Code sends it)."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        return None
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        budget = budget if isinstance(budget, int) else 0
        return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    if thinking.get("type") == "adaptive":
        effort = (body.get("output_config") or {}).get("effort")
        return effort if effort in ("low", "medium", "high") else "medium"
    return None


def _tool_choice(choice: object):
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    return None


def _text_of(content: object, where: str) -> str:
    """A system prompt or a tool result: a string, or text blocks joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
    raise invalid_request(f"{where}: a string or an array of text blocks.", where)


def _image_url(block: dict, where: str) -> str:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise invalid_request(f"{where}: an image needs a base64 or url source.", where)


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


def _tool_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]

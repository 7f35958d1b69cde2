"""Anthropic Messages ⇄ the internal reply (`message`)."""

from __future__ import annotations

import uuid

import orjson

from gateway.codecs.citations import as_anthropic
from gateway.codecs.reply import (
    Block,
    Choice,
    Refusal,
    Reply,
    Text,
    Thinking,
    ToolCall,
    Usage,
    stop_with_calls,
)
from gateway.codecs.usage import count

STOPS = {
    "end_turn": "end",
    "stop_sequence": "stop_sequence",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_use",
    "refusal": "content_filter",
    "pause_turn": "pause",
}
STOP_REASONS = {
    "end": "end_turn",
    "stop_sequence": "stop_sequence",
    "length": "max_tokens",
    "tool_use": "tool_use",
    "content_filter": "refusal",
    "pause": "pause_turn",
}


def decode(message: dict, answer_tool: str | None = None) -> Reply:
    """A Messages `message` (parsed JSON) as the internal reply. `answer_tool`: the name of
    the structured-output tool whose input is the answer's text."""
    parts: list = []
    answered = False
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "tool_use" and answer_tool and block.get("name") == answer_tool:
            parts.append(Text(orjson.dumps(block.get("input") or {}).decode()))
            answered = True
        elif kind == "text":
            citations = block.get("citations")
            parts.append(
                Text(_str(block.get("text")), citations if isinstance(citations, list) else [])
            )
        elif kind == "thinking":
            parts.append(Thinking(_str(block.get("thinking")), _str(block.get("signature"))))
        elif kind == "redacted_thinking":
            parts.append(Thinking(redacted=_str(block.get("data"))))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            parts.append(
                ToolCall(_str(block.get("id")) or _tool_id(), _str(block.get("name")), arguments)
            )
        elif isinstance(kind, str):  # server tools' calls and results: only Messages has them
            parts.append(Block(kind, block))
    raw = message.get("stop_reason")
    stop = STOPS.get(raw, "end") if isinstance(raw, str) else None
    if answered and stop == "tool_use" and not any(type(p) is ToolCall for p in parts):
        stop = "end"  # the structured answer given through its tool
    sequence = message.get("stop_sequence")
    return Reply(
        id=_str(message.get("id")),
        model=_str(message.get("model")),
        choices=[
            Choice(
                0,
                parts,
                stop,
                raw if isinstance(raw, str) else None,
                sequence if isinstance(sequence, str) else None,
            )
        ],
        usage=usage_of(message.get("usage")),
    )


def usage_of(usage: object) -> Usage | None:
    """A Messages `usage` as the internal one: input counts every prompt token, the cache
    writes and reads among them."""
    if not isinstance(usage, dict):
        return None
    plain, output = usage.get("input_tokens"), usage.get("output_tokens")
    if not isinstance(plain, int) or not isinstance(output, int):
        return None
    write = count(usage.get("cache_creation_input_tokens"))
    read = count(usage.get("cache_read_input_tokens"))
    return Usage(plain + write + read, output, cache_read=read, cache_write=write)


def encode(reply: Reply, model: str = "") -> dict:
    """The internal reply (its first choice: Messages has one) as a Messages `message`."""
    choice = reply.choices[0] if reply.choices else Choice()
    content = [block for part in choice.parts if (block := encode_part(part)) is not None]
    called = any(type(part) is ToolCall for part in choice.parts)
    return {
        "id": message_id(reply.id),
        "type": "message",
        "role": "assistant",
        "model": reply.model or model,
        "content": content,
        "stop_reason": stop_reason(choice.stop, called),
        "stop_sequence": choice.stop_sequence,
        "usage": encode_usage(reply.usage),
    }


def encode_part(part) -> dict | None:
    """One output part as a content block (None: an empty one)."""
    kind = type(part)
    if kind is Text or kind is Refusal:
        if not part.text:
            return None
        block = {"type": "text", "text": part.text}
        citations = as_anthropic(part.annotations, part.text)[0] if kind is Text else None
        if citations:
            block["citations"] = citations
        return block
    if kind is Thinking:
        if part.redacted and not part.text:
            return {"type": "redacted_thinking", "data": part.redacted}
        if not part.text:
            return None
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    if kind is Block:
        return part.data
    if kind is ToolCall:
        return {
            "type": "tool_use",
            "id": part.id,
            "name": part.name,
            "input": arguments(part.arguments),
        }
    return None


def stop_reason(stop: str | None, called: bool) -> str:
    """Anthropic's stop reason (a turn that called tools: `tool_use`)."""
    return STOP_REASONS.get(stop_with_calls(stop, called) or "end", "end_turn")


def encode_usage(usage: Usage | None) -> dict:
    """The internal usage as Messages' (its input_tokens are the uncached ones)."""
    usage = usage or Usage()
    return {
        "input_tokens": max(0, usage.input - usage.cache_read - usage.cache_write),
        "output_tokens": usage.output,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
    }


def arguments(text: str) -> dict:
    """A tool call's arguments as the object Anthropic clients expect."""
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def message_id(given: str) -> str:
    if given.startswith("msg_"):
        return given
    return "msg_" + uuid.uuid4().hex[:24]


def _tool_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""

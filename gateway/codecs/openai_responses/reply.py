"""The internal reply ⇄ the Responses API's output items and usage (the `response` object
around them is the dialect's: it echoes the request)."""

from __future__ import annotations

import uuid

from gateway.codecs.citations import as_responses
from gateway.codecs.reply import Choice, Refusal, Reply, Text, Thinking, ToolCall, Usage


def encode_output(reply: Reply) -> list[dict]:
    """The first choice's parts as output items, in order: reasoning, messages (adjacent
    text and refusals in one), function calls."""
    choice = reply.choices[0] if reply.choices else Choice()
    items: list[dict] = []
    for part in choice.parts:
        kind = type(part)
        if kind is Thinking:
            items.append(reasoning_item(part.text, part.signature or part.redacted))
        elif kind is ToolCall:
            items.append(call_item(part.id, part.name, part.arguments))
        elif kind is Text or kind is Refusal:
            content = (
                text_content(part.text, part.annotations, part.logprobs)
                if kind is Text
                else {"type": "refusal", "refusal": part.text}
            )
            if items and items[-1]["type"] == "message":
                items[-1]["content"].append(content)
            else:
                items.append(message_item([content]))
    return items


def text_content(text: str, annotations=(), logprobs=None) -> dict:
    return {
        "type": "output_text",
        "text": text,
        "annotations": as_responses(annotations, text)[0] if annotations else [],
        "logprobs": logprobs or [],
    }


def message_item(content: list[dict], status: str = "completed") -> dict:
    return {
        "id": "msg_" + uuid.uuid4().hex,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {
        "id": "fc_" + uuid.uuid4().hex,
        "type": "function_call",
        "status": status,
        "call_id": call_id or "call_" + uuid.uuid4().hex,
        "name": name,
        "arguments": arguments,
    }


def reasoning_item(text: str, encrypted: str = "", status: str = "completed") -> dict:
    """A reasoning item: its text, and a signature or redacted data as its encrypted
    content (what a later turn hands back)."""
    item = {"id": "rs_" + uuid.uuid4().hex, "type": "reasoning", "status": status, "summary": []}
    item["content"] = [{"type": "reasoning_text", "text": text}] if text else []
    item["encrypted_content"] = encrypted or None
    return item


def encode_usage(usage: Usage | None) -> dict:
    """The internal usage as the Responses API's."""
    usage = usage or Usage()
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read,
            "cache_write_tokens": usage.cache_write,
        },
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.input + usage.output,
    }


def incomplete(reply: Reply) -> bool:
    """Whether the answer stopped at its length (a response `incomplete`)."""
    return bool(reply.choices) and reply.choices[0].stop == "length"

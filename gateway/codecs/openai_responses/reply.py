"""The internal reply ⇄ the Responses API's output items and usage (the `response` object
around them is the dialect's: it echoes the request); `decode` reads a whole `response`
an upstream with the Responses API answered."""

from __future__ import annotations

import uuid

from gateway.codecs.citations import as_responses
from gateway.codecs.reply import (
    Choice,
    Refusal,
    Reply,
    StopReason,
    Text,
    Thinking,
    ToolCall,
    Usage,
    stop_with_calls,
)
from gateway.codecs.usage import count

# Why a response is `incomplete` (`incomplete_details.reason`), as a stop reason.
INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


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


# -- decode ------------------------------------------------------------------------------


def decode(response: dict) -> Reply:
    """A Responses `response` object (parsed JSON) as the internal reply: its output items
    as one choice's parts, in order."""
    parts: list = []
    for item in response.get("output") or ():
        if isinstance(item, dict):
            parts += item_parts(item)
    created = response.get("created_at")
    return Reply(
        id=_str(response.get("id")),
        model=_str(response.get("model")),
        created=created if isinstance(created, int) else 0,
        choices=[Choice(0, parts, *stop_of(response, any(type(p) is ToolCall for p in parts)))],
        usage=usage_of(response.get("usage")),
    )


def item_parts(item: dict) -> list:
    """One output item's parts: a message's texts and refusals, a function call, a
    reasoning item's thinking (its encrypted content as the signature)."""
    kind = item.get("type")
    if kind == "message":
        parts: list = []
        for content in item.get("content") or ():
            if not isinstance(content, dict):
                continue
            if content.get("type") == "output_text" and isinstance(content.get("text"), str):
                annotations, logprobs = content.get("annotations"), content.get("logprobs")
                parts.append(Text(
                    content["text"],
                    annotations if isinstance(annotations, list) else [],
                    logprobs if isinstance(logprobs, list) and logprobs else None,
                ))  # fmt: skip
            elif content.get("type") == "refusal" and isinstance(content.get("refusal"), str):
                parts.append(Refusal(content["refusal"]))
        return parts
    if kind == "function_call":
        arguments = item.get("arguments")
        call_id = _str(item.get("call_id")) or _str(item.get("id"))
        return [ToolCall(call_id, _str(item.get("name")), arguments or "{}")]
    if kind == "reasoning":
        return thinking_of(item)
    return []


def thinking_of(item: dict) -> list:
    """A reasoning item as a thinking part (none when it has neither text nor encrypted
    content): its text, else its summary's."""
    text = _texts(item.get("content")) or _texts(item.get("summary"))
    encrypted = _str(item.get("encrypted_content"))
    if text:
        return [Thinking(text, signature=encrypted)]
    return [Thinking(redacted=encrypted)] if encrypted else []


def _texts(parts: object) -> str:
    return (
        "".join(_str(part.get("text")) for part in parts or () if isinstance(part, dict))
        if isinstance(parts, list)
        else ""
    )


def stop_of(response: dict, called: bool) -> tuple[StopReason | None, str | None]:
    """(the stop reason, the upstream's own word): an incomplete response's reason, else
    the end of its turn (or of a turn that called tools)."""
    status = _str(response.get("status")) or None
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = _str(details.get("reason")) if isinstance(details, dict) else ""
        return INCOMPLETE.get(reason, "length"), reason or status
    return stop_with_calls("end", called), status


def usage_of(usage: object) -> Usage | None:
    """A Responses `usage` as the internal one (cached and reasoning tokens too)."""
    if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
        return None
    prompt = count(usage.get("input_tokens"))
    inputs = usage.get("input_tokens_details")
    outputs = usage.get("output_tokens_details")
    inputs = inputs if isinstance(inputs, dict) else {}
    outputs = outputs if isinstance(outputs, dict) else {}
    return Usage(
        prompt,
        count(usage.get("output_tokens")),
        cache_read=min(count(inputs.get("cached_tokens")), prompt),
        reasoning=count(outputs.get("reasoning_tokens")),
    )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""

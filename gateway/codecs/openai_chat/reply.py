"""OpenAI chat completions ⇄ the internal reply (`chat.completion`)."""

from __future__ import annotations

import time
import uuid

import orjson

from gateway.codecs.citations import as_chat
from gateway.codecs.reply import Choice, Refusal, Reply, Text, Thinking, ToolCall, Usage
from gateway.codecs.usage import count

STOPS = {
    "stop": "end",
    "length": "length",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}
FINISHES = {
    "end": "stop",
    "stop_sequence": "stop",
    "pause": "stop",
    "length": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
}
EXTRAS = ("system_fingerprint", "service_tier")


def decode(completion: dict) -> Reply:
    """A chat.completion (parsed JSON) as the internal reply."""
    choices = [
        _choice(number, choice)
        for number, choice in enumerate(completion.get("choices") or ())
        if isinstance(choice, dict)
    ]
    created = completion.get("created")
    return Reply(
        id=_str(completion.get("id")),
        model=_str(completion.get("model")),
        created=created if isinstance(created, int) else 0,
        choices=choices,
        usage=usage_of(completion.get("usage")),
        extras={name: completion[name] for name in EXTRAS if completion.get(name) is not None},
    )


def _choice(number: int, choice: dict) -> Choice:
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    parts: list = []
    thinking = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(thinking, str) and thinking:
        parts.append(Thinking(thinking))
    text = message.get("content")
    if isinstance(text, str) and text:
        logprobs = choice.get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        annotations = message.get("annotations")
        parts.append(
            Text(
                text,
                annotations if isinstance(annotations, list) else [],
                content if isinstance(content, list) else None,
            )
        )
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append(Refusal(message["refusal"]))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(_call(call.get("id"), function))
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        parts.append(_call(None, legacy))
    index = choice.get("index")
    raw = choice.get("finish_reason")
    return Choice(
        index if isinstance(index, int) else number,
        parts,
        STOPS.get(raw, "end") if isinstance(raw, str) else None,
        raw if isinstance(raw, str) else None,
    )


def _call(call_id: object, function: dict) -> ToolCall:
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments or {}).decode()
    return ToolCall(
        call_id if isinstance(call_id, str) and call_id else "call_" + uuid.uuid4().hex[:24],
        _str(function.get("name")),
        arguments,
    )


def usage_of(usage: object) -> Usage | None:
    """An OpenAI chat `usage` as the internal one (cached and reasoning tokens too)."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = count(usage.get("prompt_tokens")), usage.get("completion_tokens")
    if not isinstance(completion, int):
        total = usage.get("total_tokens")
        completion = total - prompt if isinstance(total, int) else 0
    inputs = usage.get("prompt_tokens_details")
    outputs = usage.get("completion_tokens_details")
    inputs = inputs if isinstance(inputs, dict) else {}
    outputs = outputs if isinstance(outputs, dict) else {}
    cached = max(count(inputs.get("cached_tokens")), count(usage.get("prompt_cache_hit_tokens")))
    return Usage(
        prompt,
        max(0, completion),
        cache_read=min(cached, prompt),
        reasoning=count(outputs.get("reasoning_tokens")),
        input_details=_counts(inputs, ("cached_tokens",)),
        output_details=_counts(outputs, ("reasoning_tokens",)),
    )


def _counts(details: dict, known: tuple[str, ...]) -> dict[str, int]:
    return {k: v for k, v in details.items() if k not in known and isinstance(v, int) and v}


def encode(reply: Reply, model: str = "") -> dict:
    """The internal reply as a chat.completion."""
    out = {
        "id": reply.id if reply.id.startswith("chatcmpl") else _completion_id(reply.id),
        "object": "chat.completion",
        "created": reply.created or int(time.time()),
        "model": reply.model or model,
        "choices": [_encode_choice(choice) for choice in reply.choices or [Choice()]],
    }
    out.update(reply.extras)
    if reply.usage is not None:
        out["usage"] = encode_usage(reply.usage)
    return out


def _encode_choice(choice: Choice) -> dict:
    texts, thinking, calls, refusals, logprobs = [], [], [], [], None
    annotations: list[dict] = []
    for part in choice.parts:
        kind = type(part)
        if kind is Text:
            if part.annotations:  # their spans in the joined content
                offset = sum(len(text) for text in texts)
                annotations += as_chat(part.annotations, part.text, offset)[0]
            texts.append(part.text)
            if part.logprobs is not None:
                logprobs = (logprobs or []) + part.logprobs
        elif kind is Thinking and part.text:
            thinking.append(part.text)
        elif kind is ToolCall:
            calls.append(
                {
                    "id": part.id,
                    "type": "function",
                    "function": {"name": part.name, "arguments": part.arguments},
                }
            )
        elif kind is Refusal:
            refusals.append(part.text)
    message: dict = {
        "role": "assistant",
        "content": "".join(texts) or None,
        "refusal": "".join(refusals) or None,
    }
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    if calls:
        message["tool_calls"] = calls
    if annotations:
        message["annotations"] = annotations
    return {
        "index": choice.index,
        "message": message,
        "logprobs": {"content": logprobs, "refusal": None} if logprobs is not None else None,
        "finish_reason": finish_reason(choice.stop),
    }


def finish_reason(stop: str | None) -> str:
    """OpenAI's finish reason for a normalized stop reason."""
    return FINISHES.get(stop, "stop") if stop else "stop"


def encode_usage(usage: Usage) -> dict:
    """The internal usage as OpenAI chat's."""
    out = {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read, **usage.input_details},
    }
    if usage.reasoning or usage.output_details:
        out["completion_tokens_details"] = {
            "reasoning_tokens": usage.reasoning,
            **usage.output_details,
        }
    return out


def _completion_id(given: str) -> str:
    core = given.removeprefix("msg_").removeprefix("resp_") if given else uuid.uuid4().hex
    return "chatcmpl-" + core


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""

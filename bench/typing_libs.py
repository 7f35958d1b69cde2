"""What a typed request costs on the hot path: decoding and checking one chat request (and
one chat reply) into typed objects with msgspec, pydantic and stdlib dataclasses, against
today's untyped path (orjson into dicts, then the hand-written checks of the edge).

    PYTHONPATH=$PWD .venv/bin/python bench/typing_libs.py

Every figure is the best of 7 repeats of 2,000 decodes, in microseconds per body. A
library that is not installed prints "not installed" (msgspec is not a KeyRelay
dependency; `pip install msgspec` into the venv to measure it).
"""

import dataclasses
import platform
import sys
import timeit
from typing import Any

import orjson

from gateway.validation import validate_chat

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"],
}
REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is the weather in Paris? " * 8},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 11}'},
    ],
    "tools": [
        {"type": "function", "function": {"name": f"tool{i}", "parameters": SCHEMA}}
        for i in range(3)
    ],
    "temperature": 0.2,
    "max_tokens": 256,
    "stream": False,
    "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}},
}
REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1765000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "It is 11 degrees and cloudy in Paris today. " * 6,
                "tool_calls": None,
            },
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 60,
        "total_tokens": 180,
        "prompt_tokens_details": {"cached_tokens": 64},
    },
}
RAW_REQUEST = orjson.dumps(REQUEST)
RAW_REPLY = orjson.dumps(REPLY)


def best(fn, number: int = 2000, repeat: int = 7) -> float:
    """Microseconds per call: the best of `repeat` runs of `number` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


# --- today's path: dicts and the edge's checks -------------------------------------------


def untyped_request():
    body = orjson.loads(RAW_REQUEST)
    validate_chat(body)
    return body


def untyped_reply():
    return orjson.loads(RAW_REPLY)


# --- stdlib dataclasses, built by hand from the decoded dicts ----------------------------


@dataclasses.dataclass(slots=True)
class DCMessage:
    role: str
    content: Any = None
    tool_calls: list | None = None
    tool_call_id: str | None = None


@dataclasses.dataclass(slots=True)
class DCRequest:
    model: str
    messages: list[DCMessage]
    tools: list | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = False
    response_format: dict | None = None


def dataclass_request():
    body = orjson.loads(RAW_REQUEST)
    validate_chat(body)  # dataclasses check nothing: the edge's checks still run
    return DCRequest(
        model=body["model"],
        messages=[
            DCMessage(m["role"], m.get("content"), m.get("tool_calls"), m.get("tool_call_id"))
            for m in body["messages"]
        ],
        tools=body.get("tools"),
        temperature=body.get("temperature"),
        max_tokens=body.get("max_tokens"),
        stream=body.get("stream", False),
        response_format=body.get("response_format"),
    )


def cases() -> list[tuple[str, object, object]]:
    """(library, request decoder, reply decoder); a missing library has None decoders."""
    found = [("orjson + dicts (today)", untyped_request, untyped_reply)]
    found.append(("dataclasses (orjson + checks)", dataclass_request, None))
    found.append(msgspec_case())
    found.append(pydantic_case())
    return found


def msgspec_case():
    try:
        import msgspec
    except ImportError:
        return ("msgspec", None, None)

    class Function(msgspec.Struct):
        name: str
        arguments: str = ""

    class ToolCall(msgspec.Struct):
        id: str
        function: Function
        type: str = "function"

    class Part(msgspec.Struct):
        type: str
        text: str | None = None
        image_url: dict | None = None

    class Message(msgspec.Struct):
        role: str
        content: str | list[Part] | None = None
        tool_calls: list[ToolCall] | None = None
        tool_call_id: str | None = None

    class ToolFunction(msgspec.Struct):
        name: str
        parameters: dict | None = None
        description: str | None = None

    class Tool(msgspec.Struct):
        function: ToolFunction
        type: str = "function"

    class Request(msgspec.Struct):
        model: str
        messages: list[Message]
        tools: list[Tool] | None = None
        temperature: float | None = None
        max_tokens: int | None = None
        stream: bool = False
        response_format: dict | None = None

    class ReplyMessage(msgspec.Struct):
        role: str
        content: str | None = None
        tool_calls: list[ToolCall] | None = None

    class Choice(msgspec.Struct):
        index: int
        message: ReplyMessage
        finish_reason: str | None = None

    class Usage(msgspec.Struct):
        prompt_tokens: int
        completion_tokens: int
        total_tokens: int
        prompt_tokens_details: dict | None = None

    class Reply(msgspec.Struct):
        id: str
        model: str
        choices: list[Choice]
        usage: Usage | None = None

    request = msgspec.json.Decoder(Request)
    reply = msgspec.json.Decoder(Reply)
    return ("msgspec " + msgspec.__version__, lambda: request.decode(RAW_REQUEST),
            lambda: reply.decode(RAW_REPLY))  # fmt: skip


def pydantic_case():
    try:
        import pydantic
    except ImportError:
        return ("pydantic", None, None)
    from pydantic import BaseModel, ConfigDict

    class Model(BaseModel):
        model_config = ConfigDict(extra="allow")  # unknown fields must survive a relay

    class Function(Model):
        name: str
        arguments: str = ""

    class ToolCall(Model):
        id: str
        function: Function
        type: str = "function"

    class Part(Model):
        type: str
        text: str | None = None
        image_url: dict | None = None

    class Message(Model):
        role: str
        content: str | list[Part] | None = None
        tool_calls: list[ToolCall] | None = None
        tool_call_id: str | None = None

    class ToolFunction(Model):
        name: str
        parameters: dict | None = None

    class Tool(Model):
        function: ToolFunction
        type: str = "function"

    class Request(Model):
        model: str
        messages: list[Message]
        tools: list[Tool] | None = None
        temperature: float | None = None
        max_tokens: int | None = None
        stream: bool = False
        response_format: dict | None = None

    class ReplyMessage(Model):
        role: str
        content: str | None = None
        tool_calls: list[ToolCall] | None = None

    class Choice(Model):
        index: int
        message: ReplyMessage
        finish_reason: str | None = None

    class Usage(Model):
        prompt_tokens: int
        completion_tokens: int
        total_tokens: int

    class Reply(Model):
        id: str
        model: str
        choices: list[Choice]
        usage: Usage | None = None

    return ("pydantic " + pydantic.VERSION, lambda: Request.model_validate_json(RAW_REQUEST),
            lambda: Reply.model_validate_json(RAW_REPLY))  # fmt: skip


def main() -> None:
    print(f"python {sys.version.split()[0]}, {platform.machine()}, request {len(RAW_REQUEST)} B,"
          f" reply {len(RAW_REPLY)} B; best of 7 x 2,000, us per body")  # fmt: skip
    print(f"| {'library':32} | request | reply |")
    print(f"|{'-' * 34}|---------|-------|")
    for name, request, reply in cases():
        if request is None:
            print(f"| {name:32} | not installed | |")
            continue
        req = f"{best(request):7.2f}"
        rep = f"{best(reply):5.2f}" if reply else "    –"
        print(f"| {name:32} | {req} | {rep} |")


if __name__ == "__main__":
    main()

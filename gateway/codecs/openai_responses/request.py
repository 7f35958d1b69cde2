"""OpenAI Responses requests: `decode` a Responses body (its shape checked first by the
Responses dialect, which names the field in its 400; read here without trusting types)
into the internal request. Built-in tools (web search, …) stay out of it: only an upstream
with the Responses API has them, and it gets the client's body as it is."""

from __future__ import annotations

import orjson

from gateway.codecs.request import (
    File,
    Image,
    Output,
    Part,
    Reasoning,
    Request,
    Sampling,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    Turn,
)
from gateway.providers.reading import int_or_none, list_of, number_or_none, text_or_none

FORMAT = "openai_responses"
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "developer"}
# The internal request's paths as a Responses client writes them.
NAMES = {
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
    "verbosity": "text.verbosity",
    "logprobs": "top_logprobs",
}


def decode(body: dict) -> Request:
    """A Responses body as the internal request."""
    turns, names = _turns(body)
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    answer = body.get("max_output_tokens")
    top = body.get("top_logprobs")
    return Request(
        model=str(body.get("model", "")),
        turns=turns,
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body),
        output=_output(text.get("format")),
        sampling=Sampling(
            temperature=number_or_none(body.get("temperature")),
            top_p=number_or_none(body.get("top_p")),
            logprobs=int_or_none(top) is not None and top > 0,
            top_logprobs=int_or_none(top) or None,
        ),
        max_tokens=int_or_none(answer),
        reasoning=_reasoning(reasoning),
        metadata=body["metadata"] if isinstance(body.get("metadata"), dict) else None,
        user=text_or_none(body.get("user")),
        prompt_cache_key=text_or_none(body.get("prompt_cache_key")),
        service_tier=text_or_none(body.get("service_tier")),
        safety_identifier=text_or_none(body.get("safety_identifier")),
        verbosity=text_or_none(text.get("verbosity")),
        stream=body.get("stream") is True,
        include_usage=True,
        source=FORMAT,
        names={**NAMES, **names},
    )


def _turns(body: dict) -> tuple[list[Turn], dict[str, str]]:
    """The instructions (a system turn) and the input items as turns; each turn's path
    mapped to its item's (`messages[2]` → `input[1]`)."""
    turns: list[Turn] = []
    names: dict[str, str] = {}
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        turns.append(Turn("system", [Text(instructions)]))
        names["messages[0]"] = "instructions"
    given = body.get("input")
    if isinstance(given, str):
        names[f"messages[{len(turns)}]"] = "input"
        turns.append(Turn("user", [Text(given)]))
        return turns, names
    for number, item in enumerate(list_of(given)):
        turn = _turn(item)
        if turn is not None:
            names[f"messages[{len(turns)}]"] = f"input[{number}]"
            turns.append(turn)
    return turns, names


def _turn(item: object) -> Turn | None:
    if not isinstance(item, dict):
        return None
    kind = item.get("type") or ("item_reference" if "id" in item and "role" not in item
                                else "message")  # fmt: skip
    if kind == "message":
        role = ROLES.get(item.get("role")) if isinstance(item.get("role"), str) else None
        return Turn(role, _parts(item.get("content"))) if role else None
    if kind == "function_call":
        arguments = item.get("arguments")
        arguments = arguments if isinstance(arguments, str) and arguments else "{}"
        call_id = str(item.get("call_id") or item.get("id") or "")
        call = ToolCall(call_id, str(item.get("name", "")), arguments)
        return Turn("assistant", [call])
    if kind == "function_call_output":
        output = item.get("output")
        output = output if isinstance(output, str) else orjson.dumps(output).decode()
        return Turn("tool", [ToolResult(str(item.get("call_id", "")), [Text(output)])])
    if kind == "reasoning" and isinstance(item.get("encrypted_content"), str):
        return Turn("assistant", [_thinking(item)])
    return None  # item references and other tools' items: only the Responses API has them


def _thinking(item: dict) -> Thinking:
    """A reasoning item handed back: its text signed by its encrypted content (how a
    thinking block's signature goes out, codecs/openai_responses/reply.py), or, with no
    text, the encrypted content alone (a redacted block's data)."""
    text = "".join(
        str(part.get("text", ""))
        for part in list_of(item.get("content"))
        if isinstance(part, dict) and part.get("type") == "reasoning_text"
    )
    if text:
        return Thinking(text, signature=item["encrypted_content"])
    return Thinking(redacted=item["encrypted_content"])


def _parts(content: object) -> list[Part]:
    if isinstance(content, str):
        return [Text(content)] if content else []
    parts: list[Part] = []
    for part in list_of(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append(Text(part["text"]))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            url, detail = part["image_url"], text_or_none(part.get("detail"))
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                parts.append(Image(data=data, media_type=media, detail=detail))
            else:
                parts.append(Image(url=url, detail=detail))
        elif kind == "input_file":
            parts.append(_file(part))
    return parts


def _file(part: dict) -> File:
    name, data = text_or_none(part.get("filename")), part.get("file_data")
    if isinstance(data, str) and data.startswith("data:") and ";base64," in data:
        media, encoded = data[5:].split(";base64,", 1)
        return File(data=encoded, media_type=media, name=name)
    if isinstance(part.get("file_url"), str):
        return File(url=part["file_url"], name=name)
    return File(file_id=str(part.get("file_id", "")), name=name)


def _tools(tools: object) -> list[Tool]:
    out = []
    for tool in list_of(tools):
        if isinstance(tool, dict) and tool.get("type") == "function" and tool.get("name"):
            parameters = tool.get("parameters")
            strict = tool.get("strict")
            out.append(Tool(
                str(tool["name"]),
                description=text_or_none(tool.get("description")),
                parameters=parameters if isinstance(parameters, dict) else None,
                strict=strict if isinstance(strict, bool) else None,
            ))  # fmt: skip
    return out


def _tool_choice(body: dict) -> ToolChoice | None:
    choice = body.get("tool_choice")
    parallel = False if body.get("parallel_tool_calls") is False else None
    if choice in ("auto", "none", "required"):
        return ToolChoice(choice, parallel=parallel)
    function = isinstance(choice, dict) and choice.get("type") == "function"
    if function and isinstance(choice.get("name"), str):
        return ToolChoice("tool", [choice["name"]], parallel=parallel)
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        names = [
            str(t.get("name", "")) for t in list_of(choice.get("tools")) if isinstance(t, dict)
        ]
        return ToolChoice("allowed", names, choice.get("mode") == "required", parallel)
    return ToolChoice(parallel=parallel) if parallel is False else None


def _output(fmt: object) -> Output | None:
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    schema, strict = fmt.get("schema"), fmt.get("strict")
    return Output(
        fmt["type"],
        schema if isinstance(schema, dict) else None,
        text_or_none(fmt.get("name")),
        strict if isinstance(strict, bool) else None,
    )


def _reasoning(reasoning: dict) -> Reasoning | None:
    effort = reasoning.get("effort")
    if not isinstance(effort, str):
        return None
    return Reasoning(
        effort=effort, summary=text_or_none(reasoning.get("summary")), off=effort == "none"
    )

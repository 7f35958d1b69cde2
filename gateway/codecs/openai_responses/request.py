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
    """A reasoning item handed back: its text (else its summary's) signed by its encrypted
    content (how a thinking block's signature goes out, codecs/openai_responses/reply.py),
    or, with no text, the encrypted content alone (a redacted block's data)."""
    text = _texts(item.get("content"), "reasoning_text") or _texts(
        item.get("summary"), "summary_text"
    )
    if text:
        return Thinking(text, signature=item["encrypted_content"])
    return Thinking(redacted=item["encrypted_content"])


def _texts(parts: object, kind: str) -> str:
    return "".join(
        str(part.get("text", ""))
        for part in list_of(parts)
        if isinstance(part, dict) and part.get("type") == kind
    )


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


# -- encode ------------------------------------------------------------------------------


def encode(request: Request) -> dict:
    """The internal request as a Responses body (kept by no one: `store` false unless
    the request asks, as the gateway keeps nothing upstream on a client's behalf)."""
    instructions, items = _items(request)
    body: dict = {"model": request.model, "input": items}
    if instructions is not None:
        body["instructions"] = instructions
    if request.tools:
        body["tools"] = [_tool_body(tool) for tool in request.tools if tool.kind == "function"]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = _choice_body(choice)
        if choice.parallel is False:
            body["parallel_tool_calls"] = False
    text: dict = {}
    if request.output is not None:
        text["format"] = _format_body(request.output)
    if request.verbosity is not None:
        text["verbosity"] = request.verbosity
    if text:
        body["text"] = text
    reasoning = request.reasoning
    if reasoning is not None and reasoning.effort is not None:
        body["reasoning"] = {"effort": reasoning.effort}
        if reasoning.summary is not None:
            body["reasoning"]["summary"] = reasoning.summary
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    sampling = request.sampling
    for name in ("temperature", "top_p", "top_logprobs"):
        if getattr(sampling, name) is not None:
            body[name] = getattr(sampling, name)
    if sampling.logprobs or sampling.top_logprobs:  # they come back only when included
        body["include"] = ["message.output_text.logprobs"]
    for name in ("metadata", "user", "prompt_cache_key", "service_tier", "safety_identifier"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    body["store"] = request.store is True
    if request.stream:
        body["stream"] = True
    return body


def _items(request: Request) -> tuple[str | None, list[dict] | str]:
    """(the instructions, the input items): a leading system turn is the instructions,
    unless the client wrote it as an input item (a Responses client's own order kept)."""
    turns = request.turns
    instructions = None
    first = turns[0] if turns else None
    as_item = request.names.get("messages[0]", "").startswith("input")
    if first is not None and first.role == "system" and not as_item:
        texts = [part.text for part in first.content if isinstance(part, Text)]
        if len(texts) == len(first.content):
            instructions, turns = "\n".join(texts), turns[1:]
    number = len(request.turns) - len(turns)  # the first turn left's index
    if len(turns) == 1 and request.names.get(f"messages[{number}]") == "input":
        return instructions, _content(turns[0], turns[0].content)  # the client's one text
    items: list[dict] = []
    for turn in turns:
        items += _turn_items(turn)
    return instructions, items


def _turn_items(turn: Turn) -> list[dict]:
    """One turn as its items: its reasoning (what led to the answer), the results it
    hands back (each right after the call it answers), its message, then its calls."""
    items = [
        _reasoning_item(part)
        for part in turn.content
        if isinstance(part, Thinking) and (part.signature or part.redacted)
    ]
    for part in turn.content:
        if isinstance(part, ToolResult):
            output = _content(Turn("user"), part.content)  # text alone as a string
            items.append({"type": "function_call_output", "call_id": part.call_id,
                          "output": output})  # fmt: skip
    content = [p for p in turn.content if isinstance(p, Text | Image | File)]
    if content and turn.role != "tool":
        items.append({"role": turn.role, "content": _content(turn, content)})
    for part in turn.content:
        if isinstance(part, ToolCall):
            items.append({"type": "function_call", "call_id": part.id, "name": part.name,
                          "arguments": part.arguments})  # fmt: skip
    return items


def _reasoning_item(part: Thinking) -> dict:
    """A thinking part handed back: its encrypted content (a signature, or a redacted
    block's data), its text as the summary (what OpenAI's reasoning models give and take
    back; the encrypted content is the reasoning itself). No `id`: with `store` false
    the upstream reads the encrypted content, not a stored item (as Codex sends them)."""
    summary = [{"type": "summary_text", "text": part.text}] if part.text else []
    return {
        "type": "reasoning",
        "summary": summary,
        "encrypted_content": part.signature or part.redacted,
    }


def _content(turn: Turn, parts: list[Part]):
    """A message's content: a string for text alone (and for an assistant's earlier
    answer, which takes no input parts), else input parts."""
    if turn.role == "assistant" or all(isinstance(part, Text) for part in parts):
        joiner = "\n" if turn.role in ("system", "developer") else ""
        return joiner.join(part.text for part in parts if isinstance(part, Text))
    return [body for body in map(_part_body, parts) if body is not None]


def _part_body(part: Part) -> dict | None:
    if isinstance(part, Text):
        return {"type": "input_text", "text": part.text}
    if isinstance(part, Image):
        url = part.url or f"data:{part.media_type or 'image/png'};base64,{part.data or ''}"
        return {"type": "input_image", "image_url": url, "detail": part.detail or "auto"}
    if isinstance(part, File):
        if part.text is not None:
            return {"type": "input_text", "text": part.text}
        body: dict = {"type": "input_file"}
        if part.data is not None:
            body["file_data"] = f"data:{part.media_type or 'application/pdf'};base64,{part.data}"
        elif part.url is not None:
            body["file_url"] = part.url
        else:
            body["file_id"] = part.file_id
        if part.name:
            body["filename"] = part.name
        return body
    return None


def _tool_body(tool: Tool) -> dict:
    body: dict = {"type": "function", "name": tool.name}
    if tool.description is not None:
        body["description"] = tool.description
    body["parameters"] = tool.parameters
    body["strict"] = tool.strict
    return body


def _choice_body(choice: ToolChoice):
    if choice.mode == "tool":
        return {"type": "function", "name": choice.names[0]}
    if choice.mode == "allowed":
        tools = [{"type": "function", "name": name} for name in choice.names]
        mode = "required" if choice.required else "auto"
        return {"type": "allowed_tools", "mode": mode, "tools": tools}
    return choice.mode


def _format_body(output: Output) -> dict:
    if output.kind != "json_schema":
        return {"type": output.kind}
    body: dict = {"type": "json_schema", "name": output.name or "answer"}
    body["schema"] = output.schema if output.schema is not None else {"type": "object"}
    if output.strict is not None:
        body["strict"] = output.strict
    return body

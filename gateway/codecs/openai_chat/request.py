"""OpenAI chat completions requests: `decode` a chat body (checked at the edge by
gateway/validation.py; read here without trusting its types) into the internal request,
`encode` one into a chat body."""

from __future__ import annotations

from gateway.codecs.request import (
    Audio,
    Cache,
    File,
    Image,
    Output,
    Part,
    Reasoning,
    Request,
    Sampling,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    Turn,
)
from gateway.providers.reading import (
    image_url,
    int_or_none,
    list_of,
    number_or_none,
    part_text,
    strings,
    text_or_none,
)

FORMAT = "openai"
KNOWN = {
    "model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options",
    "temperature", "top_p", "top_k", "stop", "seed", "presence_penalty", "frequency_penalty",
    "logit_bias", "n", "logprobs", "top_logprobs", "tools", "tool_choice",
    "parallel_tool_calls", "functions", "function_call", "response_format",
    "reasoning_effort", "user", "prompt_cache_key", "service_tier", "store", "metadata",
    "safety_identifier", "modalities", "audio", "prediction", "web_search_options",
    "verbosity",
}  # fmt: skip
ROLES = {"system", "developer", "user", "assistant", "tool"}


def decode(body: dict) -> Request:
    """A chat body as the internal request (legacy functions as tools)."""
    tools = _tools(body)
    sampling = Sampling(
        temperature=number_or_none(body.get("temperature")),
        top_p=number_or_none(body.get("top_p")),
        top_k=int_or_none(body.get("top_k")),
        stop=[body["stop"]] if isinstance(body.get("stop"), str) else strings(body.get("stop")),
        seed=int_or_none(body.get("seed")),
        presence_penalty=number_or_none(body.get("presence_penalty")),
        frequency_penalty=number_or_none(body.get("frequency_penalty")),
        logit_bias=body["logit_bias"] if isinstance(body.get("logit_bias"), dict) else None,
        n=body["n"] if isinstance(body.get("n"), int) and body["n"] > 1 else 1,
        logprobs=body.get("logprobs") is True,
        top_logprobs=int_or_none(body.get("top_logprobs")) or None,
    )
    answer = body.get("max_completion_tokens") or body.get("max_tokens")
    effort = body.get("reasoning_effort")
    options = body.get("stream_options")
    return Request(
        model=str(body.get("model", "")),
        turns=_turns(list_of(body.get("messages"))),
        tools=tools,
        tool_choice=_tool_choice(body),
        output=_output(body.get("response_format")),
        sampling=sampling,
        max_tokens=answer if isinstance(answer, int) else None,
        reasoning=Reasoning(effort=effort) if isinstance(effort, str) else None,
        metadata=body["metadata"] if isinstance(body.get("metadata"), dict) else None,
        user=text_or_none(body.get("user")),
        prompt_cache_key=text_or_none(body.get("prompt_cache_key")),
        service_tier=text_or_none(body.get("service_tier")),
        store=body["store"] if isinstance(body.get("store"), bool) else None,
        safety_identifier=text_or_none(body.get("safety_identifier")),
        modalities=strings(body.get("modalities")),
        audio=body["audio"] if isinstance(body.get("audio"), dict) else None,
        prediction=body["prediction"] if isinstance(body.get("prediction"), dict) else None,
        web_search=body.get("web_search_options"),
        verbosity=text_or_none(body.get("verbosity")),
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        extra={name: value for name, value in body.items() if name not in KNOWN},
        source=FORMAT,
    )


def _turns(messages: list) -> list[Turn]:
    turns: list[Turn] = []
    calls: dict[str, str] = {}  # a legacy function's name → the id made up for its call
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES | {"function"}:
            continue
        role, content = message["role"], _parts(message.get("content"))
        name = text_or_none(message.get("name"))
        if role == "tool":
            call_id = str(message.get("tool_call_id", ""))
            turns.append(Turn("tool", [ToolResult(call_id, content)], name))
            continue
        if role == "function":  # a legacy function's result answers its last call
            result = ToolResult(calls.get(name or "", ""), content, name=name)
            turns.append(Turn("tool", [result], name))
            continue
        if role == "assistant":
            content += _calls(message, number, calls)
        turns.append(Turn(role, content, name))
    return turns


def _calls(message: dict, number: int, legacy: dict[str, str]) -> list[Part]:
    out: list[Part] = []
    for call in list_of(message.get("tool_calls")):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            arguments = function.get("arguments")
            out.append(ToolCall(str(call.get("id", "")), str(function.get("name", "")),
                                arguments if isinstance(arguments, str) else "{}"))  # fmt: skip
    call = message.get("function_call")
    if isinstance(call, dict):
        name = str(call.get("name", ""))
        legacy[name] = f"call_function_{number}"
        arguments = call.get("arguments")
        out.append(ToolCall(legacy[name], name, arguments if isinstance(arguments, str) else "{}"))
    return out


def _parts(content: object) -> list[Part]:
    if isinstance(content, str):
        return [Text(content)] if content else []
    parts: list[Part] = []
    for part in list_of(content):
        text = part_text(part)
        cache = _cache(part.get("cache_control")) if isinstance(part, dict) else None
        if text is not None:
            parts.append(Text(text, cache))
        elif not isinstance(part, dict):
            continue
        elif part.get("type") == "image_url":
            url = image_url(part)
            if url is not None:
                parts.append(_image(url, part, cache))
        elif part.get("type") == "file":
            parts.append(_file(part.get("file"), cache))
        elif part.get("type") == "input_audio":
            audio = part.get("input_audio") if isinstance(part.get("input_audio"), dict) else {}
            parts.append(Audio(str(audio.get("data", "")), str(audio.get("format") or "wav")))
    return parts


def _cache(mark: object) -> Cache | None:
    return Cache(str(mark.get("type", "ephemeral"))) if isinstance(mark, dict) else None


def _image(url: str, part: dict, cache: Cache | None) -> Image:
    detail = (part.get("image_url") or {}).get("detail") if isinstance(part.get("image_url"),
                                                                      dict) else None  # fmt: skip
    detail = detail if isinstance(detail, str) else None
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return Image(data=data, media_type=media, detail=detail, cache=cache)
    return Image(url=url, detail=detail, cache=cache)


def _file(file: object, cache: Cache | None) -> File:
    file = file if isinstance(file, dict) else {}
    name, data = text_or_none(file.get("filename")), file.get("file_data")
    if isinstance(data, str) and data.startswith("data:") and ";base64," in data:
        media, encoded = data[5:].split(";base64,", 1)
        return File(data=encoded, media_type=media, name=name, cache=cache)
    return File(file_id=str(file.get("file_id", "")), name=name, cache=cache)


def _tools(body: dict) -> list[Tool]:
    tools: list[Tool] = []
    for tool in list_of(body.get("tools")):
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        if tool.get("type", "function") == "function" and isinstance(function, dict):
            tools.append(_function(function))
        elif isinstance(tool.get("type"), str):
            options = {k: v for k, v in tool.items() if k != "type"}
            tools.append(Tool(str(tool.get("name", tool["type"])), tool["type"], options=options))
    if not tools:  # legacy functions
        tools = [_function(f) for f in list_of(body.get("functions")) if isinstance(f, dict)]
    return tools


def _function(function: dict) -> Tool:
    parameters = function.get("parameters")
    strict = function.get("strict")
    return Tool(
        str(function.get("name", "")),
        description=text_or_none(function.get("description")),
        parameters=parameters if isinstance(parameters, dict) else None,
        strict=strict if isinstance(strict, bool) else None,
    )


def _tool_choice(body: dict) -> ToolChoice | None:
    choice = body.get("tool_choice", body.get("function_call"))
    parallel = False if body.get("parallel_tool_calls") is False else None
    if choice in ("auto", "none", "required"):
        return ToolChoice(choice, parallel=parallel)
    if isinstance(choice, dict):
        function = choice.get("function") if isinstance(choice.get("function"), dict) else choice
        if choice.get("type") == "allowed_tools":
            allowed = choice.get("allowed_tools") if isinstance(choice.get("allowed_tools"),
                                                                dict) else {}  # fmt: skip
            names = [
                str((tool.get("function") or {}).get("name") or tool.get("name") or "")
                for tool in list_of(allowed.get("tools"))
                if isinstance(tool, dict)
            ]
            required = allowed.get("mode") == "required"
            return ToolChoice("allowed", names, required, parallel)
        if isinstance(function.get("name"), str):
            return ToolChoice("tool", [function["name"]], parallel=parallel)
    return ToolChoice(parallel=parallel) if parallel is False else None


def _output(fmt: object) -> Output | None:
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        return None
    wanted = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), dict) else {}
    schema = wanted.get("schema")
    strict = wanted.get("strict")
    return Output(
        fmt["type"],
        schema if isinstance(schema, dict) else None,
        text_or_none(wanted.get("name")),
        strict if isinstance(strict, bool) else None,
    )


# -- encode ------------------------------------------------------------------------------


def encode(request: Request) -> dict:
    """The internal request as a chat body."""
    body: dict = {"model": request.model, "messages": _messages(request.turns)}
    if request.max_tokens is not None:
        body["max_completion_tokens"] = request.max_tokens
    sampling = request.sampling
    for name in ("temperature", "top_p", "top_k", "seed", "presence_penalty",
                 "frequency_penalty", "logit_bias", "top_logprobs"):  # fmt: skip
        if getattr(sampling, name) is not None:
            body[name] = getattr(sampling, name)
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.n > 1:
        body["n"] = sampling.n
    if sampling.logprobs:
        body["logprobs"] = True
    if request.tools:
        body["tools"] = [_tool_body(tool) for tool in request.tools]
    choice = request.tool_choice
    if choice is not None:
        if choice.parallel is False:
            body["parallel_tool_calls"] = False
        chosen = _choice_body(choice)
        if chosen is not None:
            body["tool_choice"] = chosen
    if request.output is not None:
        body["response_format"] = _format_body(request.output)
    if request.reasoning is not None and request.reasoning.effort is not None:
        body["reasoning_effort"] = request.reasoning.effort
    for name in ("metadata", "user", "prompt_cache_key", "service_tier", "store",
                 "safety_identifier", "audio", "prediction", "verbosity"):  # fmt: skip
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.modalities:
        body["modalities"] = list(request.modalities)
    if request.web_search is not None:
        body["web_search_options"] = request.web_search
    if request.stream:
        body["stream"] = True
        if request.include_usage:
            body["stream_options"] = {"include_usage": True}
    if request.source == FORMAT:
        body.update(request.extra)
    return body


def _messages(turns: list[Turn]) -> list[dict]:
    out: list[dict] = []
    for turn in turns:
        results = [p for p in turn.content if isinstance(p, ToolResult)]
        for result in results:  # each a `tool` message of its own
            out.append({"role": "tool", "tool_call_id": result.call_id,
                        "content": _text(result.content)})  # fmt: skip
        if turn.role == "tool":
            continue
        calls = [p for p in turn.content if isinstance(p, ToolCall)]
        parts = [p for p in turn.content if not isinstance(p, ToolCall | ToolResult)]
        if results and not parts and not calls:
            continue
        # A system prompt's blocks are lines of one prompt; a user's parts run on.
        joiner = "\n" if turn.role in ("system", "developer") else ""
        message: dict = {"role": turn.role, "content": _content(parts, joiner)}
        if turn.name is not None:
            message["name"] = turn.name
        if calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls
            ]  # fmt: skip
        out.append(message)
    return out


def _text(parts: list[Part]) -> str:
    return "".join(p.text for p in parts if isinstance(p, Text))


def _content(parts: list[Part], joiner: str = ""):
    """A plain string when the parts are text only and unmarked, else content parts."""
    if all(isinstance(p, Text) and p.cache is None for p in parts):
        return joiner.join(p.text for p in parts) if parts else None
    out = []
    for part in parts:
        body = _part_body(part)
        if body is not None:
            if getattr(part, "cache", None) is not None:
                body["cache_control"] = {"type": part.cache.type}
            out.append(body)
    return out


def _part_body(part: Part) -> dict | None:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, Image):
        url = part.url or f"data:{part.media_type or 'image/png'};base64,{part.data or ''}"
        image = {"url": url, **({"detail": part.detail} if part.detail else {})}
        return {"type": "image_url", "image_url": image}
    if isinstance(part, File):
        if part.text is not None:
            return {"type": "text", "text": part.text}
        media = part.media_type or "application/pdf"
        file: dict = {"file_id": part.file_id} if part.file_id else {
            "file_data": f"data:{media};base64,{part.data or ''}"}  # fmt: skip
        if part.name:
            file["filename"] = part.name
        return {"type": "file", "file": file}
    if isinstance(part, Audio):
        return {"type": "input_audio", "input_audio": {"data": part.data, "format": part.format}}
    return None  # thinking: chat has no field for it


def _tool_body(tool: Tool) -> dict:
    if tool.kind != "function":
        return {"type": tool.kind, **tool.options}
    function: dict = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _choice_body(choice: ToolChoice):
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.names[0]}}
    if choice.mode == "allowed":
        tools = [{"type": "function", "function": {"name": name}} for name in choice.names]
        mode = "required" if choice.required else "auto"
        return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": tools}}
    return None if choice.mode == "auto" and choice.parallel is False else choice.mode


def _format_body(output: Output) -> dict:
    if output.kind != "json_schema":
        return {"type": output.kind}
    schema: dict = {"name": output.name or "answer"}
    if output.schema is not None:
        schema["schema"] = output.schema
    if output.strict is not None:
        schema["strict"] = output.strict
    return {"type": "json_schema", "json_schema": schema}

"""Anthropic Messages requests: `decode` a client's body into the internal request (its
shape checked first: a 400 naming the field's path), `encode` one into a body an
Anthropic upstream takes."""

from __future__ import annotations

import uuid

import orjson

from gateway.codecs.request import (
    Cache,
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
from gateway.errors import invalid_request
from gateway.providers.carry import ANSWER_TOOL, refused
from gateway.validation import MAX_ANSWER_TOKENS, is_int, refuse

FORMAT = "anthropic"
# The top-level fields decode reads; any other is kept in `extra` (and encoded back).
KNOWN = {
    "model", "messages", "system", "max_tokens", "stream", "temperature", "top_p", "top_k",
    "stop_sequences", "tools", "tool_choice", "thinking", "output_config", "metadata",
    "service_tier", "cache_control", "output_format",
}  # fmt: skip
# The internal request's paths (as carry names them) as an Anthropic client writes them.
NAMES = {
    "stop": "stop_sequences",
    "user": "metadata.user_id",
    "reasoning_effort": "thinking",
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
    "response_format": "output_format",
}
# Effort → thinking budget, for a request that names an effort (OpenAI's, or an adaptive
# Messages request's).
EFFORT_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}
# A Messages request must say how long the answer may be; OpenAI's may not.
DEFAULT_MAX_TOKENS = 4096
# The least thinking budget Anthropic takes; it must also stay below `max_tokens`.
MIN_THINKING = 1024


def decode(body: object) -> Request:
    """The client's Messages body as the internal request; a 400 for a bad one."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_request("model: a non-empty string is required.", "model")
    max_tokens = body.get("max_tokens")
    if not is_int(max_tokens) or not 1 <= max_tokens <= MAX_ANSWER_TOKENS:
        raise invalid_request(
            f"max_tokens: a positive integer of at most {MAX_ANSWER_TOKENS:,} is required.",
            "max_tokens",
        )
    check_body(body)
    turns, names = _turns(body)
    request = Request(
        model=model,
        turns=turns,
        max_tokens=max_tokens,
        stream=body.get("stream") is True,
        include_usage=True,
        sampling=_sampling(body),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        reasoning=_reasoning(body),
        output=_output(body.get("output_format")),
        cache=_cache(body.get("cache_control")),
        extra={name: value for name, value in body.items() if name not in KNOWN},
        source=FORMAT,
        names={**NAMES, **names},
    )
    metadata = body.get("metadata")
    if metadata:
        request.metadata = metadata
        if isinstance(metadata.get("user_id"), str):
            request.user = metadata["user_id"]
    if isinstance(body.get("service_tier"), str):
        request.service_tier = body["service_tier"]
    return request


def _turns(body: dict) -> tuple[list[Turn], dict[str, str]]:
    """The system prompt (a turn of its own) and the turns; the map from the internal
    turns' paths to the client's (the system prompt shifts them by one)."""
    turns: list[Turn] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        turns.append(Turn("system", [Text(system)]))
    elif isinstance(system, list) and system:
        turns.append(Turn("system", _blocks(system)))
    given = body.get("messages")
    if not isinstance(given, list) or not given:
        raise invalid_request("messages: a non-empty array is required.", "messages")
    names = {}
    for number, turn in enumerate(given):
        content = turn["content"]
        parts = [Text(content)] if isinstance(content, str) else _blocks(content)
        if turns:
            names[f"messages[{len(turns)}]"] = f"messages[{number}]"
        turns.append(Turn(turn["role"], parts))
    if not turns[0:1] or turns[0].role != "system" or not isinstance(system, str | list):
        return turns, {}
    names["messages[0]"] = "system"
    return turns, names


def _blocks(blocks: list) -> list[Part]:
    parts: list[Part] = []
    for block in blocks:
        part = _part(block)
        if part is not None:
            parts.append(part)
    return parts


def _part(block: dict) -> Part | None:
    """One content block (shape checked by check_body); None for one no other format
    has (server tool blocks): it reaches an Anthropic upstream only."""
    kind, cache = block["type"], _cache(block.get("cache_control"))
    if kind == "text":
        return Text(block["text"], cache)
    if kind == "image":
        source = block["source"]
        if source["type"] == "url":
            return Image(url=source.get("url"), cache=cache)
        return Image(data=source.get("data"), media_type=source.get("media_type"), cache=cache)
    if kind == "document":
        source = block["source"]
        title = block.get("title") if isinstance(block.get("title"), str) else None
        if source["type"] == "text":
            return File(text=source.get("data") or "", name=title, cache=cache)
        if source["type"] == "url":
            return File(url=source.get("url"), name=title, cache=cache)
        if source["type"] == "file":
            return File(file_id=str(source.get("file_id", "")), name=title, cache=cache)
        return File(data=source.get("data"), media_type=source.get("media_type"), name=title,
                    cache=cache)  # fmt: skip
    if kind == "tool_use":
        arguments = orjson.dumps(block.get("input") or {}).decode()
        return ToolCall(block.get("id") or "", block["name"], arguments, cache=cache)
    if kind == "tool_result":
        content = block.get("content")
        inner = [Text(content)] if isinstance(content, str) else _blocks(content or [])
        return ToolResult(block["tool_use_id"], inner, block.get("is_error") is True, cache=cache)
    if kind == "thinking":
        return Thinking(block["thinking"], block.get("signature"))
    if kind == "redacted_thinking":
        return Thinking(redacted=str(block.get("data", "")))
    return None


def _cache(mark: object) -> Cache | None:
    if not isinstance(mark, dict):
        return None
    ttl = mark.get("ttl")
    return Cache(str(mark.get("type", "ephemeral")), ttl if isinstance(ttl, str) else None)


def _number(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise refuse(name, "a number")
    return value


def _sampling(body: dict) -> Sampling:
    stops = body.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise invalid_request("stop_sequences: an array of strings.", "stop_sequences")
    top_k = body.get("top_k")
    if top_k is not None and (not is_int(top_k) or top_k < 0):
        raise refuse("top_k", "a non-negative integer")
    return Sampling(
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        top_k=top_k,
        stop=stops or [],
    )


def _tools(tools: object) -> list[Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid_request("tools: an array of tools.", "tools")
    return [_tool(tool, number) for number, tool in enumerate(tools)]


def _tool(tool: object, number: int) -> Tool:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise invalid_request(f"tools[{number}]: an object with a name.", f"tools[{number}]")
    kind = tool.get("type")
    cache = _cache(tool.get("cache_control"))
    description = tool.get("description") if isinstance(tool.get("description"), str) else None
    if kind not in (None, "custom") and "input_schema" not in tool:
        # A server tool (web search, code execution…): its own settings ride along.
        options = {k: v for k, v in tool.items() if k not in ("type", "name", "cache_control")}
        return Tool(tool["name"], kind, description, options=options, cache=cache)
    schema = tool.get("input_schema") or {"type": "object", "properties": {}}
    strict = tool.get("strict") if isinstance(tool.get("strict"), bool) else None
    return Tool(tool["name"], "function", description, schema, strict, cache=cache)


def _tool_choice(choice: object) -> ToolChoice | None:
    if not isinstance(choice, dict):
        return None
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    kind = choice.get("type")
    if kind == "tool" and isinstance(choice.get("name"), str):
        return ToolChoice("tool", [choice["name"]], parallel=parallel)
    mode = {"auto": "auto", "any": "required", "none": "none"}.get(
        kind if isinstance(kind, str) else ""
    )
    if mode is None:
        raise refuse("tool_choice.type", "'auto', 'any', 'tool' or 'none'")
    return ToolChoice(mode, parallel=parallel)


def _reasoning(body: dict) -> Reasoning | None:
    """`thinking`: a budget of tokens (`enabled`), the effort an `adaptive` request names
    in `output_config` (as Claude Code sends it), or none (`disabled`)."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        return None
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        return Reasoning(budget=budget if isinstance(budget, int) else 1024)
    if kind == "adaptive":
        effort = (body.get("output_config") or {}).get("effort")
        return Reasoning(effort=effort if effort in ("low", "medium", "high") else "medium")
    if kind == "disabled":
        return Reasoning(off=True)
    raise refuse("thinking.type", "'enabled', 'adaptive' or 'disabled'")


def _output(fmt: object) -> Output | None:
    """Structured output (`output_format: {type: json_schema, schema}`)."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise refuse("output_format", "an object of type 'json_schema'")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise refuse("output_format.schema", "an object (a JSON schema)")
    return Output("json_schema", schema)


# -- encode ------------------------------------------------------------------------------


def encode(request: Request) -> dict:
    """The internal request as a Messages body. What Messages has no field for is emulated
    here: structured output as a tool whose input is the answer (`ANSWER_TOOL`),
    `allowed_tools` as the tools it allows, a reasoning effort as a thinking budget kept
    below `max_tokens`. OpenAI's account hints (metadata, service tier) are not sent."""
    native = request.source == FORMAT
    body: dict = {"model": request.model, "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS}
    system = _system(request.turns)
    if system:
        body["system"] = system
    body["messages"] = _messages(request.turns)
    sampling = request.sampling
    for name in ("temperature", "top_p", "top_k"):
        if getattr(sampling, name) is not None:
            body[name] = getattr(sampling, name)
    if sampling.stop:
        body["stop_sequences"] = list(sampling.stop)
    tools = request.offered_tools()
    if tools:
        body["tools"] = [_tool_body(tool) for tool in tools]
        choice = _choice_body(request.tool_choice)
        if choice is not None:
            body["tool_choice"] = choice
    _thinking(body, request)
    if request.output is not None and native and request.output.kind == "json_schema":
        body["output_format"] = {"type": "json_schema", "schema": request.output.schema}
    elif request.output is not None:
        _answer_tool(body, request)
    metadata = dict(request.metadata or {}) if native else {}
    if request.user is not None:
        metadata["user_id"] = request.user
    if metadata:
        body["metadata"] = metadata
    if native and request.service_tier is not None:
        body["service_tier"] = request.service_tier
    if request.cache is not None:
        body["cache_control"] = _cache_body(request.cache)
    if request.stream:
        body["stream"] = True
    if native:
        body.update(request.extra)
    fit_thinking(body)
    return body


def _system(turns: list[Turn]) -> str | list[dict]:
    """The system and developer turns: one string, or blocks when one is marked."""
    parts = [p for t in turns if t.role in ("system", "developer") for p in t.content]
    texts = [part for part in parts if isinstance(part, Text)]
    if all(part.cache is None for part in texts):
        return "\n\n".join(part.text for part in texts if part.text)
    return [_block(part) for part in texts]


def _thinking(body: dict, request: Request) -> None:
    """`thinking` from the request's reasoning: its budget, or its effort's. A length the
    client did not set grows to hold the thinking; one it set is the most of all output,
    reasoning included (as OpenAI counts it): fit_thinking fits the budget under it."""
    reasoning = request.reasoning
    if reasoning is None:
        return
    if reasoning.off:
        if request.source == FORMAT:
            body["thinking"] = {"type": "disabled"}
        return
    budget = reasoning.budget or EFFORT_BUDGETS.get(reasoning.effort or "")
    if budget is None:  # an effort Messages has no budget for ("none")
        return
    body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if request.max_tokens is None:
        body["max_tokens"] = max(body["max_tokens"], budget + MIN_THINKING)


def _answer_tool(body: dict, request: Request) -> None:
    """Structured output as a tool the model must call, its input the answer: forced when
    the client offers no tool, one of any tool otherwise (left to the model under extended
    thinking, which refuses a forced tool)."""
    tool = {
        "name": ANSWER_TOOL,
        "description": "Give your answer as this tool's input, following its schema.",
        "input_schema": _answer_schema(request),
    }
    offered = body.get("tools") or []
    chosen = (body.get("tool_choice") or {}).get("type")
    body["tools"] = [*offered, tool]
    if (body.get("thinking") or {}).get("type") == "enabled":
        body["tool_choice"] = {"type": "auto"}
    elif not offered or chosen == "none":
        body["tools"] = [tool]
        body["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
    elif chosen != "tool":
        body["tool_choice"] = {"type": "any"}


def _answer_schema(request: Request) -> dict:
    """The schema the answer must follow (an object of any shape for JSON mode); a root
    that is not an object cannot be a tool's input."""
    schema = request.output.schema if request.output.kind == "json_schema" else None
    if schema is None:
        return {"type": "object"}
    if schema.get("type", "object") != "object":
        where = request.name_of("response_format.json_schema.schema")
        raise refused(FORMAT, where, "a schema whose root is not an object")
    return schema


def fit_thinking(payload: dict) -> None:
    """Keep extended thinking below `max_tokens`, as Anthropic requires and a budget's cap
    needs (the upstream is never asked for more): its budget is lowered to leave room for
    the answer, or thinking is dropped when not even the least budget fits."""
    thinking = payload.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return
    budget, most = thinking.get("budget_tokens"), payload.get("max_tokens")
    if not is_int(budget) or not is_int(most) or budget < most:
        return
    if most <= MIN_THINKING:
        del payload["thinking"]
        return
    payload["thinking"] = {**thinking, "budget_tokens": max(MIN_THINKING, most - MIN_THINKING)}


def _messages(turns: list[Turn]) -> list[dict]:
    """Turns as Messages turns: tool results go in a user turn, and turns of one role in
    a row merge (Messages alternates)."""
    out: list[dict] = []
    for turn in turns:
        if turn.role in ("system", "developer"):
            continue
        role = "assistant" if turn.role == "assistant" else "user"
        blocks = [_block(part) for part in turn.content]
        blocks = [block for block in blocks if block is not None]
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"] += blocks
        else:
            out.append({"role": role, "content": blocks})
    return out


def _block(part: Part) -> dict | None:
    block: dict | None = None
    if isinstance(part, Text):
        block = {"type": "text", "text": part.text}
    elif isinstance(part, Image):
        source = {"type": "url", "url": part.url}
        if not part.url:
            source = {"type": "base64", "media_type": part.media_type or "image/png",
                      "data": part.data}  # fmt: skip
        block = {"type": "image", "source": source}
    elif isinstance(part, File):
        block = {"type": "document", "source": _document(part)}
        if part.name is not None:
            block["title"] = part.name
    elif isinstance(part, ToolCall):
        block = {"type": "tool_use", "id": part.id or "toolu_" + uuid.uuid4().hex[:24],
                 "name": part.name, "input": _object(part.arguments)}  # fmt: skip
    elif isinstance(part, ToolResult):
        block = {"type": "tool_result", "tool_use_id": part.call_id,
                 "content": _result_content(part.content)}  # fmt: skip
        if part.is_error:
            block["is_error"] = True
    elif isinstance(part, Thinking):
        if part.redacted is not None:
            return {"type": "redacted_thinking", "data": part.redacted}
        if part.signature is None:  # unsigned reasoning (another format's): refused upstream
            return None
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    cache = getattr(part, "cache", None)
    if block is not None and cache is not None:
        block["cache_control"] = _cache_body(cache)
    return block


def _result_content(parts: list[Part]) -> str | list[dict]:
    """A tool's result: its text as a string, or blocks when it has more than text."""
    if all(isinstance(part, Text) and part.cache is None for part in parts):
        return "".join(part.text for part in parts)
    return [block for block in map(_block, parts) if block is not None]


def _document(part: File) -> dict:
    if part.text is not None:
        return {"type": "text", "media_type": "text/plain", "data": part.text}
    if part.url is not None:
        return {"type": "url", "url": part.url}
    if part.file_id is not None:
        return {"type": "file", "file_id": part.file_id}
    return {"type": "base64", "media_type": part.media_type or "application/pdf",
            "data": part.data or ""}  # fmt: skip


def _tool_body(tool: Tool) -> dict:
    if tool.kind != "function":
        body = {"type": tool.kind, "name": tool.name, **tool.options}
    else:
        body = {"name": tool.name, "input_schema": tool.parameters or {"type": "object"}}
        if tool.description:
            body["description"] = tool.description
        if tool.strict is not None:
            body["strict"] = tool.strict
    if tool.cache is not None:
        body["cache_control"] = _cache_body(tool.cache)
    return body


def _choice_body(choice: ToolChoice | None) -> dict | None:
    if choice is None:
        return None
    if choice.mode == "tool":
        body = {"type": "tool", "name": choice.names[0]}
    else:
        mode = "any" if choice.mode == "required" or choice.required else choice.mode
        body = {"type": "auto" if mode == "allowed" else mode}
    if choice.parallel is False:
        body["disable_parallel_tool_use"] = True
    return body


def _cache_body(cache: Cache) -> dict:
    return {"type": cache.type, **({"ttl": cache.ttl} if cache.ttl else {})}


def _object(arguments: str) -> dict:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# -- the body's shape ------------------------------------------------------------------
# Checked before translation, and before an Anthropic upstream gets the body as it is: a
# wrong type is the client's 400 with its path (`messages[0].content[1].source`).


def check_body(body: dict) -> None:
    """A 400 at the first field of the wrong shape."""
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        _check_blocks(system, "system")
    turns = body.get("messages")
    for number, turn in enumerate(turns if isinstance(turns, list) else ()):
        where = f"messages[{number}]"
        if not isinstance(turn, dict):
            raise refuse(where, "an object with a 'role' and 'content'")
        if turn.get("role") not in ("user", "assistant", "system"):
            raise refuse(f"{where}.role", "'user' or 'assistant'")
        content = turn.get("content")
        if not isinstance(content, str):
            _check_blocks(content, f"{where}.content")
    for name in ("thinking", "tool_choice", "metadata", "output_config"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise refuse(name, "an object")
    budget = (body.get("thinking") or {}).get("budget_tokens")
    if budget is not None and not is_int(budget):
        raise refuse("thinking.budget_tokens", "an integer")
    tools = body.get("tools")
    for number, tool in enumerate(tools if isinstance(tools, list) else ()):
        schema = tool.get("input_schema") if isinstance(tool, dict) else None
        if schema is not None and not isinstance(schema, dict):
            raise refuse(f"tools[{number}].input_schema", "an object (a JSON schema)")


def _check_blocks(blocks: object, path: str) -> None:
    if not isinstance(blocks, list):
        raise refuse(path, "a string or an array of content blocks")
    for number, block in enumerate(blocks):
        here = f"{path}[{number}]"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise refuse(here, "an object with a string 'type'")
        _check_block(block, here)


def _check_block(block: dict, here: str) -> None:
    kind = block["type"]
    strings = {
        "text": ("text",),
        "thinking": ("thinking",),
        "tool_use": ("name",),
        "tool_result": ("tool_use_id",),
    }.get(kind, ())
    for name in strings:
        if not isinstance(block.get(name), str):
            raise refuse(f"{here}.{name}", "a string")
    if kind == "tool_use" and not isinstance(block.get("input", {}), dict):
        raise refuse(f"{here}.input", "an object")
    if kind == "tool_use" and not isinstance(block.get("id", ""), str):
        raise refuse(f"{here}.id", "a string")
    if kind == "tool_result":
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            _check_blocks(content, f"{here}.content")
    if kind in ("image", "document"):
        source = block.get("source")
        if not isinstance(source, dict) or not isinstance(source.get("type"), str):
            raise refuse(f"{here}.source", "an object with a string 'type'")
        for name in ("data", "media_type", "url"):
            if source.get(name) is not None and not isinstance(source[name], str):
                raise refuse(f"{here}.source.{name}", "a string")

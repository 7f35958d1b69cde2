"""What each provider can carry of a chat request: the fields, and how each kind treats them.

Every provider adapter declares, in one table (`ProviderAdapter.carries`), how it treats
each field of the gateway's (OpenAI chat) request that not every upstream format has:
carried (sent as the upstream's own field), emulated (its effect made another way, e.g.
structured output as a forced tool), ignored (a hint no answer depends on) or refused.
A refused field a request uses is a 400 `unsupported_by_provider` naming it, before any
upstream is called; never a 200 that ignored what the client asked. The README's table
is made from these declarations (`table()`), and a test keeps the two the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from gateway.codecs.request import Audio, File, Image, Request, ToolCall, ToolResult
from gateway.errors import GatewayError

CARRIED, EMULATED, IGNORED, REFUSED = "carried", "emulated", "ignored", "refused"


class Unsupported(GatewayError):
    """A field this key's provider cannot carry. It is no fault of the key: the attempt
    loop passes the key over (a key of another kind may carry it) and answers with this
    400 when no key could."""

    def __init__(self, message: str, param: str | None = None, what: str = "") -> None:
        super().__init__(400, message, code="unsupported_by_provider", param=param)
        self.what = what  # what the field asks for, in words


def refused(provider: str, param: str, what: str) -> Unsupported:
    """The 400 for a field `param` (what it asks for: `what`) this provider cannot carry."""
    return Unsupported(
        f"Provider '{provider}' cannot carry '{param}' ({what}); send the request without "
        "it, or route this model to a provider that carries it.",
        param,
        what,
    )


def _set(name: str) -> Callable[[dict], list[str]]:
    """Asked when the field is there and not null."""
    return lambda body: [name] if body.get(name) is not None else []


def _true(name: str) -> Callable[[dict], list[str]]:
    return lambda body: [name] if body.get(name) is True else []


def _non_zero(name: str) -> Callable[[dict], list[str]]:
    return lambda body: [name] if body.get(name) not in (None, 0, 0.0) else []


def _format(kind: str) -> Callable[[dict], list[str]]:
    def asked(body: dict) -> list[str]:
        fmt = body.get("response_format")
        return ["response_format"] if isinstance(fmt, dict) and fmt.get("type") == kind else []

    return asked


def _choices(body: dict) -> list[str]:
    n = body.get("n")
    return ["n"] if isinstance(n, int) and n > 1 else []


def _logprobs(body: dict) -> list[str]:
    if body.get("logprobs") is True:
        return ["logprobs"]
    return ["top_logprobs"] if body.get("top_logprobs") not in (None, 0) else []


def _parts(kind: str) -> Callable[[dict], list[str]]:
    """The path of the first content part of this type (`messages[1].content[0]`)."""

    def asked(body: dict) -> list[str]:
        messages = body.get("messages")
        for number, message in enumerate(messages if isinstance(messages, list) else ()):
            content = message.get("content") if isinstance(message, dict) else None
            for index, part in enumerate(content if isinstance(content, list) else ()):
                if isinstance(part, dict) and part.get("type") == kind:
                    return [f"messages[{number}].content[{index}]"]
        return []

    return asked


def _other_tools(body: dict) -> list[str]:
    tools = body.get("tools")
    for number, tool in enumerate(tools if isinstance(tools, list) else ()):
        if isinstance(tool, dict) and tool.get("type", "function") != "function":
            return [f"tools[{number}]"]
    return []


def _allowed_tools(body: dict) -> list[str]:
    choice = body.get("tool_choice")
    return (
        ["tool_choice"]
        if isinstance(choice, dict) and choice.get("type") == "allowed_tools"
        else []
    )


def _tools(body: dict) -> list[str]:
    if body.get("tools"):
        return ["tools"]
    messages = body.get("messages")
    for number, message in enumerate(messages if isinstance(messages, list) else ()):
        if isinstance(message, dict) and (
            message.get("role") in ("tool", "function") or message.get("tool_calls")
        ):
            return [f"messages[{number}]"]
    return []


def _sampling(body: dict) -> list[str]:
    return [name for name in ("temperature", "top_p", "stop") if body.get(name) is not None][:1]


def _audio_out(body: dict) -> list[str]:
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        return ["modalities"]
    return ["audio"] if body.get("audio") is not None else []


def _cache_marks(body: dict) -> list[str]:
    """The first content part with a cache mark (`cache_control`)."""
    messages = body.get("messages")
    for number, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        for index, part in enumerate(content if isinstance(content, list) else ()):
            if isinstance(part, dict) and part.get("cache_control") is not None:
                return [f"messages[{number}].content[{index}].cache_control"]
    return []


def _parallel(body: dict) -> list[str]:
    return ["parallel_tool_calls"] if body.get("parallel_tool_calls") is False else []


@dataclass(frozen=True)
class Field:
    """One request field (`name`, as the table shows it), in words, and where a body
    asks for it (`asked`: the paths that use it; empty when it is not asked)."""

    name: str
    what: str
    asked: Callable[[dict], list[str]]


# The fields not every upstream format has, in the table's order. What every provider
# carries (model, messages' text, stream, max_tokens…) is not listed.
FIELDS = (
    Field("n", "several choices (n > 1)", _choices),
    Field("logprobs", "log probabilities (logprobs, top_logprobs)", _logprobs),
    Field("response_format: json_object", "JSON mode", _format("json_object")),
    Field("response_format: json_schema", "structured output", _format("json_schema")),
    Field("tools", "tool calls", _tools),
    Field("tools[].type other than function", "tools of another type", _other_tools),
    Field("tool_choice: allowed_tools", "a restricted tool set", _allowed_tools),
    Field("parallel_tool_calls: false", "one tool call at a time", _parallel),
    Field("functions", "legacy functions", _set("functions")),
    Field("function_call", "a legacy function choice", _set("function_call")),
    Field("content part: image_url", "an image in a message", _parts("image_url")),
    Field("content part: file", "a file (PDF) in a message", _parts("file")),
    Field("content part: input_audio", "audio in a message", _parts("input_audio")),
    Field("temperature, top_p, stop", "sampling settings", _sampling),
    Field("top_k", "top-k sampling", _set("top_k")),
    Field("seed", "a sampling seed", _set("seed")),
    Field("presence_penalty", "a presence penalty", _non_zero("presence_penalty")),
    Field("frequency_penalty", "a frequency penalty", _non_zero("frequency_penalty")),
    Field("logit_bias", "token biases", lambda b: ["logit_bias"] if b.get("logit_bias") else []),
    Field("reasoning_effort", "a reasoning effort", _set("reasoning_effort")),
    Field("modalities: audio, audio", "a spoken answer", _audio_out),
    Field("prediction", "a predicted output", _set("prediction")),
    Field("web_search_options", "web search", _set("web_search_options")),
    Field("verbosity", "an answer length hint", _set("verbosity")),
    Field("user", "the end user's id", _set("user")),
    Field("prompt_cache_key", "a prompt cache key", _set("prompt_cache_key")),
    Field("cache_control", "prompt cache breakpoints", _cache_marks),
    Field(
        "store, metadata, service_tier, safety_identifier",
        "OpenAI account hints",
        lambda b: [
            n
            for n in ("store", "metadata", "service_tier", "safety_identifier")
            if b.get(n) is not None
        ][:1],
    ),  # fmt: skip
)
BY_NAME = {field.name: field for field in FIELDS}

# What an adapter of the gateway's own format declares: every field goes up as it is
# (the upstream answers for what it does not know).
ALL_CARRIED = {field.name: CARRIED for field in FIELDS}


def check(provider: str, carries: dict[str, str], body: dict, file_types=()) -> None:
    """Raise Unsupported at the first field the body asks for that `carries` refuses
    (a field missing from the declaration is refused); where file parts are carried,
    at one sent by id or of a type not in `file_types`."""
    for field in FIELDS:
        if carries.get(field.name, REFUSED) != REFUSED:
            continue
        paths = field.asked(body)
        if paths:
            raise refused(provider, paths[0], field.what)
    if carries is not ALL_CARRIED and carries.get("content part: file") == CARRIED:
        _check_files(provider, body, file_types)


def _check_files(provider: str, body: dict, file_types: tuple[str, ...]) -> None:
    """A file part must bring its bytes (`file_data`, a base64 data URL) of a type the
    provider takes: an OpenAI file id means nothing to another upstream."""
    for number, message in enumerate(body.get("messages") or ()):
        content = message.get("content") if isinstance(message, dict) else None
        for index, part in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(part, dict) or part.get("type") != "file":
                continue
            where = f"messages[{number}].content[{index}].file"
            data = (part.get("file") or {}).get("file_data")
            if not isinstance(data, str) or not data.startswith("data:") or ";base64," not in data:
                raise refused(provider, f"{where}.file_id", "a file by id; send its file_data")
            media = data[5:].split(";base64,", 1)[0]
            if file_types and media not in file_types:
                raise refused(provider, f"{where}.file_data", f"a file of type {media}")


# -- the same fields, asked of the internal request (gateway/codecs/request.py) ------------


def _typed_parts(kind: type) -> Callable[[Request], list[str]]:
    def asked(request: Request) -> list[str]:
        for number, turn in enumerate(request.turns):
            for index, part in enumerate(turn.content):
                if isinstance(part, kind):
                    return [f"messages[{number}].content[{index}]"]
        return []

    return asked


def _typed_tools(request: Request) -> list[str]:
    if request.tools:
        return ["tools"]
    for number, turn in enumerate(request.turns):
        if any(isinstance(part, ToolCall | ToolResult) for part in turn.content):
            return [f"messages[{number}]"]
    return []


def _typed_other_tools(request: Request) -> list[str]:
    kinds = (number for number, tool in enumerate(request.tools) if tool.kind != "function")
    return [f"tools[{number}]" for number in kinds][:1]


def _typed_sampling(request: Request) -> list[str]:
    sampling = request.sampling
    given = {"temperature": sampling.temperature, "top_p": sampling.top_p,
             "stop": sampling.stop or None}  # fmt: skip
    return [name for name, value in given.items() if value is not None][:1]


def _typed_output(kind: str) -> Callable[[Request], list[str]]:
    return lambda r: ["response_format"] if r.output is not None and r.output.kind == kind else []


def _typed_value(name: str, value: Callable[[Request], object]) -> Callable[[Request], list]:
    """Asked when `value` of the request is set (not None, empty, 0 or False)."""
    return lambda request: [name] if value(request) not in (None, 0, 0.0, False, [], {}) else []


def _typed_hints(request: Request) -> list[str]:
    given = {"store": request.store, "metadata": request.metadata,
             "service_tier": request.service_tier,
             "safety_identifier": request.safety_identifier}  # fmt: skip
    return [name for name, value in given.items() if value is not None][:1]


def _typed_audio(request: Request) -> list[str]:
    if "audio" in request.modalities:
        return ["modalities"]
    return ["audio"] if request.audio is not None else []


def _typed_logprobs(request: Request) -> list[str]:
    if request.sampling.logprobs:
        return ["logprobs"]
    return ["top_logprobs"] if request.sampling.top_logprobs else []


def _typed_choice(mode: str) -> Callable[[Request], list[str]]:
    def asked(request: Request) -> list[str]:
        choice = request.tool_choice
        return ["tool_choice"] if choice is not None and choice.mode == mode else []

    return asked


def _typed_parallel(request: Request) -> list[str]:
    choice = request.tool_choice
    return ["parallel_tool_calls"] if choice is not None and choice.parallel is False else []


def _typed_reasoning(request: Request) -> list[str]:
    reasoning = request.reasoning
    return ["reasoning_effort"] if reasoning is not None and not reasoning.off else []


# carry.FIELDS by name → where an internal request asks for it (the internal paths).
TYPED: dict[str, Callable[[Request], list[str]]] = {
    "n": lambda r: ["n"] if r.sampling.n > 1 else [],
    "logprobs": _typed_logprobs,
    "response_format: json_object": _typed_output("json_object"),
    "response_format: json_schema": _typed_output("json_schema"),
    "tools": _typed_tools,
    "tools[].type other than function": _typed_other_tools,
    "tool_choice: allowed_tools": _typed_choice("allowed"),
    "parallel_tool_calls: false": _typed_parallel,
    "functions": lambda r: [],  # legacy functions are tools once decoded
    "function_call": lambda r: [],
    "content part: image_url": _typed_parts(Image),
    "content part: file": _typed_parts(File),
    "content part: input_audio": _typed_parts(Audio),
    "temperature, top_p, stop": _typed_sampling,
    "top_k": _typed_value("top_k", lambda r: r.sampling.top_k),
    "seed": _typed_value("seed", lambda r: r.sampling.seed),
    "presence_penalty": _typed_value("presence_penalty", lambda r: r.sampling.presence_penalty),
    "frequency_penalty": _typed_value("frequency_penalty", lambda r: r.sampling.frequency_penalty),
    "logit_bias": _typed_value("logit_bias", lambda r: r.sampling.logit_bias),
    "reasoning_effort": _typed_reasoning,
    "modalities: audio, audio": _typed_audio,
    "prediction": _typed_value("prediction", lambda r: r.prediction),
    "web_search_options": _typed_value("web_search_options", lambda r: r.web_search),
    "verbosity": _typed_value("verbosity", lambda r: r.verbosity),
    "user": _typed_value("user", lambda r: r.user),
    "prompt_cache_key": _typed_value("prompt_cache_key", lambda r: r.prompt_cache_key),
    "cache_control": lambda r: r.cache_marks()[:1],
    "store, metadata, service_tier, safety_identifier": _typed_hints,
}


def check_typed(provider: str, carries: dict[str, str], request: Request, file_types=()) -> None:
    """`check` for the internal request: the refusal names the field as the client wrote
    it (`stop_sequences` to an Anthropic client, `text.format` to a Responses one)."""
    for field in FIELDS:
        if carries.get(field.name, REFUSED) != REFUSED:
            continue
        paths = TYPED[field.name](request)
        if paths:
            raise refused(provider, request.name_of(paths[0]), field.what)
    if carries is not ALL_CARRIED and carries.get("content part: file") == CARRIED:
        for number, turn in enumerate(request.turns):
            for index, part in enumerate(turn.content):
                if not isinstance(part, File) or part.text is not None:
                    continue
                where = request.name_of(f"messages[{number}].content[{index}]")
                if part.data is None and part.url is None:
                    raise refused(provider, where, "a file by id; send its bytes")
                if part.data is not None and file_types and part.media_type not in file_types:
                    raise refused(provider, where, f"a file of type {part.media_type}")


# The table's columns: a provider kind each (presets are OpenAI-compatible).
COLUMNS = (
    ("OpenAI-compatible", "openai"),
    ("Anthropic", "anthropic"),
    ("Gemini", "gemini"),
    ("RovoDev", "rovodev"),
    ("Claude Code / Codex CLI", "claude_code"),
)


def table(adapters: dict) -> str:
    """The Markdown table of every field × provider kind, from the declarations."""
    head = "| Request field | " + " | ".join(title for title, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for field in FIELDS:
        cells = [adapters[kind].carries.get(field.name, REFUSED) for _, kind in COLUMNS]
        lines.append(f"| `{field.name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- emulations the translating adapters share --------------------------------------------

# The tool a structured answer is asked for by where the upstream has no response schema
# (Anthropic): its input is the answer, given back as the message's content.
ANSWER_TOOL = "json_answer"


def legacy_functions(body: dict) -> bool:
    """Whether the client speaks in legacy `functions` (and wants `function_call` back)."""
    return body.get("functions") is not None and not body.get("tools")


def as_function_call(completion: dict) -> dict:
    """A completion's tool calls as the legacy `function_call` a functions client reads."""
    for choice in completion.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        calls = message.pop("tool_calls", None) if isinstance(message, dict) else None
        if calls:
            message["function_call"] = calls[0]["function"]
            choice["finish_reason"] = "function_call"
    return completion


class FunctionCallStream:
    """A stream reader whose chat chunks carry `function_call` instead of `tool_calls`
    (for a client of legacy functions); everything else is the wrapped reader's."""

    def __init__(self, reader) -> None:
        self.reader = reader

    @property
    def done(self) -> bool:
        return self.reader.done

    def feed(self, data: bytes) -> list[bytes]:
        return [_function_chunk(event) for event in self.reader.feed(data)]

    def read_usage(self):
        return self.reader.read_usage()

    def completion_text(self) -> str:
        return self.reader.completion_text()

    def billable_text(self) -> str:
        return self.reader.billable_text()


def _function_chunk(event: bytes) -> bytes:
    if b'"tool_calls"' not in event and b'"finish_reason":"tool_calls"' not in event:
        return event
    try:
        chunk = orjson.loads(event.removeprefix(b"data: ").strip())
    except orjson.JSONDecodeError:
        return event
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        calls = delta.pop("tool_calls", None)
        if calls:
            function = dict(calls[0].get("function") or {})
            if not function.get("name"):
                function.pop("name", None)
            delta["function_call"] = function
        if choice.get("finish_reason") == "tool_calls":
            choice["finish_reason"] = "function_call"
    return b"data: " + orjson.dumps(chunk) + b"\n\n"

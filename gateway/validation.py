"""Checks on a chat request body before any upstream sees it."""

from __future__ import annotations

from datetime import date

import orjson

from gateway.errors import GatewayError, invalid_request

# Fields whose JSON type we check; everything else passes through to the upstream.
_TYPES: dict[str, tuple[type, ...]] = {
    "stream": (bool,),
    "stream_options": (dict,),
    "temperature": (float, int),
    "top_p": (float, int),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "n": (int,),
    "user": (str,),
    "tools": (list,),
    "stop": (str, list),
}
_TYPE_NAMES = {
    bool: "a boolean",
    dict: "an object",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
}


# The answer-length fields: positive integers up to this cap. The cap is far above any
# model's output window; it keeps a budget estimate (price x tokens) in range.
MAX_ANSWER_TOKENS = 1_000_000
_ANSWER_FIELDS = ("max_tokens", "max_completion_tokens")
MAX_CHOICES = 128


def validate_chat(body: object) -> dict:
    """The body if it is a valid chat request; otherwise a 400 naming the field to fix."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = body.get("model")
    if model is None:
        raise invalid_request("Missing required parameter: 'model'.", "model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_request("'model' must be a non-empty string, e.g. \"gpt-4o-mini\".", "model")
    messages = body.get("messages")
    if messages is None:
        raise invalid_request("Missing required parameter: 'messages'.", "messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' must be a non-empty array of messages.", "messages")
    check_chat_messages(messages)
    for name, types in _TYPES.items():
        value = body.get(name)
        if value is None:
            continue
        # bool is an int in Python; JSON says otherwise.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise invalid_request(f"'{name}' must be {_TYPE_NAMES[types[0]]}.", name)
    for name in _ANSWER_FIELDS:
        value = body.get(name)
        if value is not None and not 1 <= value <= MAX_ANSWER_TOKENS:
            raise invalid_request(
                f"'{name}' must be a positive integer of at most {MAX_ANSWER_TOKENS:,} "
                f"(got {value}).",
                name,
            )
    n = body.get("n")
    if n is not None and not 1 <= n <= MAX_CHOICES:
        raise invalid_request(f"'n' must be between 1 and {MAX_CHOICES} (got {n}).", "n")
    check_chat_options(body)
    return body


# -- the shapes inside a chat body ----------------------------------------------------------
# Every adapter reads these paths (a part's text, an image's url, a tool call's function):
# a wrong type there is refused here, with its path, before any adapter sees it.

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
TEXT_PARTS = ("text", "input_text", "output_text", "refusal")


def refuse(path: str, what: str) -> GatewayError:
    """A 400 naming the field (`messages[0].content[1].text`) and what it must be."""
    return invalid_request(f"'{path}' must be {what}.", path)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_chat_messages(messages: list, where: str = "messages") -> None:
    """A 400 at the first message, content part or tool call of the wrong shape."""
    for index, message in enumerate(messages):
        path = f"{where}[{index}]"
        if not isinstance(message, dict):
            raise refuse(path, "an object with a 'role'")
        role = message.get("role")
        if role not in ROLES:
            raise refuse(f"{path}.role", "one of " + ", ".join(ROLES))
        check_content(message.get("content"), f"{path}.content", nullable=role == "assistant")
        for name in ("name", "tool_call_id"):
            if message.get(name) is not None and not isinstance(message[name], str):
                raise refuse(f"{path}.{name}", "a string")
        calls = message.get("tool_calls")
        if calls is not None:
            check_tool_calls(calls, f"{path}.tool_calls")


def check_content(content: object, path: str, nullable: bool = False) -> None:
    """A message's content: a string, or an array of typed parts (null for an assistant)."""
    if isinstance(content, str) or (content is None and nullable):
        return
    if not isinstance(content, list):
        raise refuse(path, "a string or an array of content parts")
    for number, part in enumerate(content):
        here = f"{path}[{number}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise refuse(here, "an object with a string 'type'")
        kind = part["type"]
        if kind in TEXT_PARTS and not isinstance(part.get("text", part.get(kind)), str):
            raise refuse(f"{here}.text", "a string")
        if kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict):
                raise refuse(f"{here}.image_url", "an object with a string 'url'")
            if not isinstance(image.get("url"), str) or not image["url"]:
                raise refuse(f"{here}.image_url.url", "a non-empty string")
        elif kind in ("input_audio", "file") and not isinstance(part.get(kind), dict):
            raise refuse(f"{here}.{kind}", "an object")


def check_tool_calls(calls: object, path: str) -> None:
    """An assistant's tool calls: objects with a function's name and its arguments."""
    if not isinstance(calls, list):
        raise refuse(path, "an array of tool calls")
    for number, call in enumerate(calls):
        here = f"{path}[{number}]"
        if not isinstance(call, dict):
            raise refuse(here, "an object")
        if call.get("id") is not None and not isinstance(call["id"], str):
            raise refuse(f"{here}.id", "a string")
        function = call.get("function")
        if not isinstance(function, dict):
            raise refuse(f"{here}.function", "an object with 'name' and 'arguments'")
        if not isinstance(function.get("name"), str):
            raise refuse(f"{here}.function.name", "a string")
        if not isinstance(function.get("arguments", ""), str):
            raise refuse(f"{here}.function.arguments", "a string of JSON")


def check_chat_options(body: dict) -> None:
    """The options adapters translate: tools, tool_choice, stop, reasoning_effort, …"""
    for name in ("reasoning_effort",):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise refuse(name, "a string")
    for name in ("parallel_tool_calls", "logprobs"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise refuse(name, "a boolean")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) is not None and not is_number(body[name]):
            raise refuse(name, "a number")
    for name in ("seed", "top_logprobs"):
        if body.get(name) is not None and not is_int(body[name]):
            raise refuse(name, "an integer")
    for name in ("response_format", "logit_bias"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise refuse(name, "an object")
    fmt = body.get("response_format")
    if fmt is not None and not isinstance(fmt.get("type"), str):
        raise refuse("response_format.type", "a string")
    stop = body.get("stop")
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        raise refuse("stop", "a string or an array of strings")
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") not in (None, True, False):
        raise refuse("stream_options.include_usage", "a boolean")
    for number, tool in enumerate(body.get("tools") or ()):
        check_tool(tool, f"tools[{number}]")
    check_tool_choice(body.get("tool_choice"))
    check_functions(body.get("functions"), body.get("function_call"))


def check_functions(functions: object, choice: object) -> None:
    """Legacy `functions` (objects with a string name) and `function_call` (a string or
    an object with a string name), as translating adapters read them."""
    if functions is not None and not isinstance(functions, list):
        raise refuse("functions", "an array of functions")
    for number, function in enumerate(functions or ()):
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise refuse(f"functions[{number}].name", "a string")
        if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
            raise refuse(f"functions[{number}].parameters", "an object (a JSON schema)")
    if choice is None or isinstance(choice, str):
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("name"), str):
        raise refuse("function_call", 'a string or an object with a string "name"')


def check_tool(tool: object, path: str) -> None:
    if not isinstance(tool, dict) or not isinstance(tool.get("type", "function"), str):
        raise refuse(path, "an object with a string 'type'")
    if tool.get("type", "function") != "function":
        return
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise refuse(f"{path}.function", "an object with a string 'name'")
    if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
        raise refuse(f"{path}.function.parameters", "an object (a JSON schema)")
    if function.get("description") is not None and not isinstance(function["description"], str):
        raise refuse(f"{path}.function.description", "a string")


def check_tool_choice(choice: object) -> None:
    if choice is None or isinstance(choice, str):
        return
    if not isinstance(choice, dict):
        raise refuse("tool_choice", "a string or an object")
    function = choice.get("function")
    if function is not None and (
        not isinstance(function, dict) or not isinstance(function.get("name"), str)
    ):
        raise refuse("tool_choice.function", "an object with a string 'name'")


# -- any JSON body and any number an admin sends ------------------------------------------

# Deeper JSON is refused: orjson parses up to 1024 levels but serialises (the upstream
# body) only up to 254, its recursion limit. No real request comes near it.
MAX_JSON_DEPTH = 254
# SQLite's INTEGER (and PostgreSQL's BIGINT): an id or a number past it cannot be stored.
MAX_SQL_INT = 2**63 - 1
# Dates an admin may ask about: arithmetic on them (a day more, 30 days less, a time zone)
# stays within Python's dates.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)


def load_json(raw: bytes, param: str | None = None) -> object:
    """A request body parsed (orjson: strict UTF-8, no NaN, no lone surrogates), or a 400:
    `invalid_json`, or `body_too_deep` past MAX_JSON_DEPTH levels of arrays and objects."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if is_too_deep(exc):
            raise too_deep(param) from None
        raise GatewayError(
            400, f"The request body is not valid JSON ({exc}).", code="invalid_json", param=param
        ) from None
    check_depth(value, param)
    return value


def is_too_deep(error: orjson.JSONDecodeError) -> bool:
    """Whether orjson refused the body for its own depth limit (1024 levels)."""
    return "depth limit" in str(error)


def check_depth(value: object, param: str | None = None) -> None:
    """A 400 `body_too_deep` when a parsed body nests past MAX_JSON_DEPTH, i.e. when it
    could not be serialised again to go upstream. The check is that serialisation, in C:
    ~0.6 us for a 2 KB chat body (a third of parsing it), ~9 us for 80 KB; counting the
    brackets in the raw bytes would cost more (~1.8 us), a walk in Python far more."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # "Recursion limit reached": nothing else can fail
        raise too_deep(param) from exc


def too_deep(param: str | None = None) -> GatewayError:
    return GatewayError(
        400,
        f"The request body is nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects.",
        code="body_too_deep",
        param=param,
    )


def out_of_range_int(value: object, path: str = "") -> str | None:
    """The path (`rpm_limit`, `model_limits.gpt-4o.rpm`) of the first integer in a parsed
    body that no database column can hold, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return path if not -MAX_SQL_INT - 1 <= value <= MAX_SQL_INT else None
    if isinstance(value, dict):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for child_path, child in items:
        found = out_of_range_int(child, child_path)
        if found is not None:
            return found
    return None


def whole_number(text: str) -> int | None:
    """`text` as an int if it is plain ASCII digits, else None (`"²".isdigit()` is True,
    but int("²") fails)."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None

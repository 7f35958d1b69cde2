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
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise invalid_request(
                f"messages[{index}] must be an object with a string 'role'.", f"messages[{index}]"
            )
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
    return body


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

"""Checks on a chat request body before any upstream sees it."""

from __future__ import annotations

from gateway.errors import invalid_request

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
    return body

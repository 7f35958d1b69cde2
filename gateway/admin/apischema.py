"""OpenAPI 3.0 schema pieces: the admin API's validators describe their input with these,
and gateway/admin/openapi.py builds the document from those descriptions."""

from __future__ import annotations

import re
from datetime import date, datetime

# Python's whitespace (what the parsers' str.strip() drops) and JSON Schema's (ECMA regex)
# differ: the patterns name the difference so that both read them the same.
BLANK = r"\s\x1c-\x1f\x85\ufeff"
NOT_BLANK = rf"[^{BLANK}]"
SPACE = r"[ \t\n\r\f\v]*"  # around a value: what both drop
EMAIL = rf"^[^@{BLANK}]+@[^@{BLANK}]+\.[^@{BLANK}]+$"
BOOLEAN = {"type": "boolean"}
# Money in the API: an exact decimal string of USD, at most 1,000,000,000 with at most six
# decimals (micro-dollars), or a whole number of USD.
_CENTS = r"(?:\.[0-9]{1,6})?"
_BILLION = r"1000000000(?:\.0{1,6})?"
USD = {
    "anyOf": [
        {
            "type": "string",
            "pattern": rf"^(?:(?:0|[1-9][0-9]{{0,8}}){_CENTS}|{_BILLION})$",
            "x-expected": 'be an amount in USD such as "10.00" (up to 1000000000, six decimals)',
            "example": "10.00",
        },
        {"type": "integer", "minimum": 0, "maximum": 10**9},
    ],
    "x-rule": 'must be an amount in USD such as "10.00": up to 1000000000, six decimals',
}
# 0.000001 to 0.999999: six decimals at most, one of them not 0.
_FRACTION = r"0\.(?:" + "|".join(f"0{{{n}}}[1-9][0-9]{{0,{5 - n}}}" for n in range(6)) + ")"
# The same, more than 0 (a cost limit, a top-up).
POSITIVE_USD = {
    "anyOf": [
        {
            "type": "string",
            "pattern": rf"^(?:[1-9][0-9]{{0,8}}{_CENTS}|{_BILLION}|{_FRACTION})$",
            "x-expected": 'be an amount in USD above 0 such as "10.00" (six decimals at most)',
            "example": "10.00",
        },
        {"type": "integer", "minimum": 1, "maximum": 10**9},
    ],
    "x-rule": 'must be an amount in USD above 0 such as "10.00": up to 1000000000',
}
# A time with its zone, ISO 8601.
# The years the server can do date arithmetic on (a day more, 30 days less, a time zone).
YEARS = r"^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"
MOMENT = {
    "type": "string",
    "format": "date-time",
    "pattern": YEARS,
    "x-expected": "be a time from 1970 to 9998",
}
DAY = {
    "type": "string",
    "format": "date",
    "pattern": YEARS,
    "x-expected": "be a day from 1970 to 9998",
}
_MODEL_LIST = {
    "type": "array",
    "items": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": NOT_BLANK},
    "minItems": 1,
    "maxItems": 16,
}
# Model ids: a list, or the same as one comma-separated string ("gpt-4o, gpt-4o-mini").
MODELS = {
    "anyOf": [
        _MODEL_LIST,
        {
            "type": "string",
            "maxLength": 2048,
            "pattern": rf"[^{BLANK},]",
            "x-expected": "name at least one model id",
        },
    ],
    "description": 'Model ids, or ["*"] for any; a comma-separated string is read as a list.',
    "x-rule": 'must be a list of model ids (at most 16), or "*" for any',
}

# A URL the server can request: a host name or an IPv6 address in brackets, a port that
# exists, then anything visible. (Python's urlparse is the judge; this is what it takes.)
_H4 = "[0-9A-Fa-f]{1,4}"
_HOST = (
    rf"(?:[A-Za-z0-9._~-]+|\[(?:{_H4}:){{7}}{_H4}\]|\[(?:{_H4}(?::{_H4}){{0,5}})?::(?:{_H4})?\])"
)
_PORT = r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"


def url_pattern(schemes: tuple[str, ...], rest: str = "[!-~]") -> str:
    """A URL of these schemes (whitespace around it is dropped); `rest`: what may follow
    the host and port."""
    return rf"^{SPACE}(?:{'|'.join(schemes)})://{_HOST}{_PORT}(?:[/?#]{rest}*)?{SPACE}$"


def nullable(schema: dict) -> dict:
    """The schema, or null (an enum lists null too, as OpenAPI 3.0.3 asks)."""
    if "enum" in schema and None not in schema["enum"]:
        return {**schema, "enum": [*schema["enum"], None], "nullable": True}
    return {**schema, "nullable": True}


def integer(low: int | None = None, high: int | None = None) -> dict:
    """An integer within [low, high]."""
    schema: dict = {"type": "integer"}
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    return schema


def text(max_length: int, pattern: str | None = None) -> dict:
    """A non-blank string of at most max_length characters."""
    schema = {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": NOT_BLANK}
    if pattern is not None:
        schema["pattern"] = pattern
    return schema


def obj(
    properties: dict,
    required: tuple | list = (),
    additional: bool = False,
    min_properties: int | None = None,
) -> dict:
    """An object of these properties (no others unless `additional`)."""
    schema: dict = {"type": "object", "properties": properties, "additionalProperties": additional}
    if required:
        schema["required"] = list(required)
    if min_properties is not None:
        schema["minProperties"] = min_properties
    return schema


def mapping(values: dict, max_properties: int | None = None) -> dict:
    """An object whose every value has this schema (a map by name)."""
    schema: dict = {"type": "object", "additionalProperties": values}
    if max_properties is not None:
        schema["maxProperties"] = max_properties
    return schema


def strings(*names: str, nullable_names: tuple = ()) -> dict:
    """Properties that are strings (some of them nullable)."""
    return {
        name: nullable({"type": "string"}) if name in nullable_names else {"type": "string"}
        for name in names
    }


# -- checking a value against these schemas -----------------------------------------------
# The admin API checks every JSON body and query value against the document's schema at
# its edge, so the document is the contract: what it forbids is a 400 naming the field,
# whatever the parsers behind it would have tolerated (they also read forms and YAML).


class SchemaError(ValueError):
    """A value the schema does not allow; `path` names it (`models[2]`, `model_limits.x`).
    `kind`: "type", "enum" or "not" when that is what failed (see _check_any)."""

    def __init__(self, path: str, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.kind = kind


_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}
_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "an array",
}


def check(schema: dict, value: object, path: str = "body") -> None:
    """Raise SchemaError at the first part of `value` the (OpenAPI 3.0) schema refuses.
    Covers the keywords these schemas use; an unknown keyword allows anything."""
    if value is None and schema.get("nullable"):
        return
    if value is None and "type" in schema:
        raise SchemaError(path, f"'{path}' must not be null.", "type")
    kind = schema.get("type")
    if kind is not None and (
        not isinstance(value, _TYPES[kind]) or (isinstance(value, bool) and kind != "boolean")
    ):
        raise SchemaError(path, f"'{path}' must be {_NAMES[kind]}.", "type")
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(str(v) for v in schema["enum"] if v is not None)
        raise SchemaError(path, f"'{path}' must be one of: {choices}.", "enum")
    if isinstance(value, str):
        _check_string(schema, value, path)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(schema, value, path)
    elif isinstance(value, list):
        _check_array(schema, value, path)
    elif isinstance(value, dict):
        _check_object(schema, value, path)
    for part in schema.get("allOf", ()):
        check(part, value, path)
    if "anyOf" in schema:
        _check_any(schema, value, path)
    if "not" in schema and _fits(schema["not"], value, path):
        # A form ruled out (e.g. "provider not given"): another form is the one meant.
        raise SchemaError(path, f"'{path}' is not allowed in this form.", "not")


def _check_any(schema: dict, value: object, path: str) -> None:
    """One of the forms must fit. Else a rule between fields (`x-rule` on `x-field`), or
    the error of the one form meant, or the schema's own rule when no one form was."""
    errors = []
    for part in schema["anyOf"]:
        try:
            check(part, value, path)
        except SchemaError as exc:
            errors.append(exc)
        else:
            return
    # Not the form meant: another kind of value, or another choice of a field that picks
    # the form (a provider), or a form ruled out. Any other error is the form's own.
    meant = [
        e for e in errors if e.kind not in ("enum", "not") and (e.kind, e.path) != ("type", path)
    ]
    if "x-field" in schema or ("x-rule" in schema and len(meant) != 1):
        raise _broken_rule(schema, path)
    raise (meant or errors)[0]


def _broken_rule(schema: dict, path: str) -> SchemaError:
    """A rule between fields (`x-field` names the one to fix) or of one field's forms."""
    if "x-field" in schema:
        return SchemaError(schema["x-field"], schema["x-rule"])
    return SchemaError(path, f"'{path}' {schema['x-rule']}.")


def _fits(schema: dict, value: object, path: str) -> bool:
    try:
        check(schema, value, path)
    except SchemaError:
        return False
    return True


def _check_string(schema: dict, value: str, path: str) -> None:
    if len(value) < schema.get("minLength", 0):
        raise SchemaError(path, f"'{path}' must not be empty.")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise SchemaError(path, f"'{path}' is longer than {schema['maxLength']} characters.")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        what = schema.get("x-expected") or f"match the pattern {schema['pattern']}"
        raise SchemaError(path, f"'{path}' must {what}.")
    if schema.get("format") in _FORMATS and not _FORMATS[schema["format"]](value):
        raise SchemaError(path, f"'{path}' must be {_FORMAT_NAMES[schema['format']]}.")


def _check_number(schema: dict, value: float, path: str) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if (low is not None and value < low) or (high is not None and value > high):
        raise SchemaError(path, f"'{path}' must be from {low} to {high}.")


def _check_array(schema: dict, value: list, path: str) -> None:
    if len(value) < schema.get("minItems", 0):
        raise SchemaError(path, f"'{path}' must hold at least {schema['minItems']} item(s).")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        raise SchemaError(path, f"'{path}' holds more than {schema['maxItems']} items.")
    for index, item in enumerate(value):
        check(schema.get("items", {}), item, f"{path}[{index}]")


def _check_object(schema: dict, value: dict, path: str) -> None:
    def at(name: str) -> str:
        return name if path == "body" else f"{path}.{name}"

    for name in schema.get("required", ()):
        if name not in value:
            raise SchemaError(at(name), f"Missing required field '{at(name)}'.")
    if len(value) < schema.get("minProperties", 0):
        raise SchemaError(path, f"'{path}' must not be empty.")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        raise SchemaError(path, f"'{path}' holds more than {schema['maxProperties']} entries.")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    # Fields with choices first: when forms are tried (anyOf), a provider that is not
    # this form's says so before its other fields are judged by this form's rules.
    for name, item in sorted(value.items(), key=lambda kv: "enum" not in properties.get(kv[0], {})):
        if name in properties:
            check(properties[name], item, at(name))
        elif extra is False:
            known = f"known: {', '.join(properties)}" if properties else "none is taken here"
            raise SchemaError(at(name), f"Unknown field '{at(name)}'; {known}.")
        elif isinstance(extra, dict):
            check(extra, item, at(name))


def _is_moment(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is not None and "T" in text.upper()
    except ValueError:
        return False


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


_FORMATS = {"date-time": _is_moment, "date": _is_date}
_FORMAT_NAMES = {"date-time": "an ISO 8601 time with a zone", "date": "a date like 2026-11-23"}

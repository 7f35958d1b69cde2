"""OpenAPI 3.0 schema pieces: the admin API's validators describe their input with these,
and gateway/openapi.py builds the document from those descriptions."""

from __future__ import annotations

BOOLEAN = {"type": "boolean"}
# Money in the API: an exact decimal string of USD (numbers are accepted too).
USD = {"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,6})?$", "example": "10.00"}
# A time with its zone, ISO 8601.
MOMENT = {"type": "string", "format": "date-time"}
MODELS = {
    "type": "array",
    "items": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"\S"},
    "minItems": 1,
    "maxItems": 16,
    "description": 'Model ids, or ["*"] for any.',
}


def nullable(schema: dict) -> dict:
    """The schema, or null."""
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
    schema = {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": r"\S"}
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

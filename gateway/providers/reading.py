"""Readers of the gateway's chat body for the translating adapters: they skip what is not
of the right type rather than raise. The dialects refuse such bodies with a 400 first
(gateway/validation.py); this is the second line."""

from __future__ import annotations


def list_of(value) -> list:
    """`value` if it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def strings(values) -> list[str]:
    """The strings of a list (nothing else)."""
    return [value for value in list_of(values) if isinstance(value, str)]


def part_text(part) -> str | None:
    """A text part's text, or None for any other part."""
    if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
        text = part.get("text")
        return text if isinstance(text, str) else None
    return None


def image_url(part) -> str | None:
    """An image part's URL, or None."""
    image = part.get("image_url") if isinstance(part, dict) else None
    url = image.get("url") if isinstance(image, dict) else image
    return url if isinstance(url, str) and url else None


def text_or_none(value: object) -> str | None:
    """The value if it is a string."""
    return value if isinstance(value, str) else None


def number_or_none(value: object) -> float | None:
    """The value if it is a number (not a boolean)."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def int_or_none(value: object) -> int | None:
    """The value if it is an integer (not a boolean)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None

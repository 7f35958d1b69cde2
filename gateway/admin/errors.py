"""The one error of admin input: which field is wrong and what to fix."""

from __future__ import annotations

from gateway.validation import MAX_SQL_INT, whole_number


class InputError(ValueError):
    """Admin input that cannot be saved; `field` names it, `status` is the HTTP answer
    (400, or 404 when it names something that does not exist, 409 for a clash)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def limit_or_none(name: str, value) -> int | None:
    """A limit as given (a whole number ≥ 1, also as text), None for none; else InputError
    naming the field."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and whole_number(value) is not None:
        value = whole_number(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(name, f"'{name}' must be a positive integer, or null for no limit.")
    if value > MAX_SQL_INT:
        raise InputError(name, f"'{name}' is too large: at most {MAX_SQL_INT}.")
    return value

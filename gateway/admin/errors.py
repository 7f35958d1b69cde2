"""The one error of admin input: which field is wrong and what to fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gateway.validation import MAX_SQL_INT, whole_number


class InputError(ValueError):
    """Admin input that cannot be saved; `field` names it, `status` is the HTTP answer
    (400, or 404 when it names something that does not exist, 409 for a clash)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status
        # Every bad field of the input, first one first: (field, message). One error has
        # itself; Problems.check() raises one that carries all it found.
        self.errors: list[tuple[str, str]] = [(field, message)]

    def sentence(self) -> str:
        """Every message, for a place that shows one line."""
        return " ".join(message for _field, message in self.errors)

    def by_field(self) -> dict[str, str]:
        """{field: message} of every bad field (a field's first message), for a form."""
        found: dict[str, str] = {}
        for field, message in self.errors:
            found.setdefault(field, message)
        return found


class Problems:
    """Collects the InputErrors of several checks, so that a form or a request body reports
    every bad field at once rather than one per try:

        problems = Problems()
        with problems.field():
            check_url(...)
        with problems.field():
            check_amount(...)
        problems.check()  # raises one InputError carrying both
    """

    def __init__(self) -> None:
        self.found: list[InputError] = []

    @contextmanager
    def field(self) -> Iterator[None]:
        """Run a check; an InputError it raises is kept, not raised."""
        try:
            yield
        except InputError as exc:
            self.found.append(exc)

    def add(self, error: InputError) -> None:
        """Keep an error raised elsewhere."""
        self.found.append(error)

    def by_field(self) -> dict[str, str]:
        """{field: message} of every error found (a field's first message)."""
        found: dict[str, str] = {}
        for error in self.found:
            for field, message in error.errors:
                found.setdefault(field, message)
        return found

    def check(self) -> None:
        """Raise the first error found, carrying every error found in `errors`."""
        if not self.found:
            return
        first = self.found[0]
        if len(self.found) > 1:
            first.errors = [pair for error in self.found for pair in error.errors]
        raise first


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

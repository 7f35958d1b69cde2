"""The one error of admin input: which field is wrong and what to fix."""

from __future__ import annotations


class InputError(ValueError):
    """Admin input that cannot be saved; `field` names it, `status` is the HTTP answer
    (400, or 404 when it names something that does not exist, 409 for a clash)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status

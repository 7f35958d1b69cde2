"""Errors that become an OpenAI-shaped error response on /v1."""

from __future__ import annotations


class GatewayError(Exception):
    """A failure the client must be told about: status, OpenAI error type/code, headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        """The OpenAI error JSON: {"error": {message, type, code, param}}."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }


def invalid_request(message: str, param: str | None = None) -> GatewayError:
    """A 400 for a request body the gateway cannot accept."""
    return GatewayError(400, message, code="invalid_request", param=param)

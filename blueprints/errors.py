"""Error handlers: OpenAI-shaped JSON on API paths, never a traceback anywhere."""

from __future__ import annotations

import logging

from flask import Flask, render_template, request
from werkzeug.exceptions import HTTPException

from blueprints.common import error_response
from extensions import db
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

_HTTP_MESSAGES = {
    404: "Unknown path {path}. The proxy serves /v1/chat/completions and /v1/models.",
    405: "Method {method} is not allowed on {path}.",
    413: "The request body is larger than the {limit} bytes allowed (KEYRELAY_MAX_BODY_BYTES).",
}


def _is_api() -> bool:
    return request.path.startswith(("/v1", "/api/"))


_PAGE_MESSAGES = {
    404: "There is nothing here: the page or the object it names does not exist.",
    405: "That action is not available here.",
    413: "The form is larger than KeyRelay accepts.",
}


def _page(status: int, message: str):
    """A readable dashboard page for an error (plain text if even that fails)."""
    try:
        return render_template("error.html", message=message, status=status), status
    except Exception:  # the error page must never become a traceback
        log.exception("error page failed")
        return message, status, {"Content-Type": "text/plain; charset=utf-8"}


def register(app: Flask) -> None:
    """Install the handlers on the app."""

    @app.errorhandler(GatewayError)
    def gateway_error(error: GatewayError):
        return error_response(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if not _is_api():
            return _page(error.code, _PAGE_MESSAGES.get(error.code, error.description))
        template = _HTTP_MESSAGES.get(error.code, error.description or error.name)
        message = template.format(
            path=request.path, method=request.method, limit=app.config["MAX_CONTENT_LENGTH"]
        )
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        return error_response(GatewayError(error.code, message, code=code.get(error.code)))

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not _is_api():
            return _page(500, "KeyRelay hit an internal error; it is in the server log.")
        return error_response(
            GatewayError(
                500,
                "KeyRelay hit an internal error; it is in the server log. Retry the request.",
                type="server_error",
                code="internal_error",
            )
        )

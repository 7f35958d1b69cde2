"""Error handlers: OpenAI-shaped JSON on API paths, never a traceback anywhere."""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from urllib.parse import urlsplit

from flask import (
    Flask,
    abort,
    current_app,
    flash,
    get_flashed_messages,
    make_response,
    render_template,
    request,
)
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from blueprints.common import error_response
from extensions import db
from gateway.errors import GatewayError, database_down, database_locked, database_unavailable
from gateway.validation import MAX_SQL_INT

log = logging.getLogger(__name__)

_HTTP_MESSAGES = {
    404: "Unknown path {path}. The proxy serves {endpoints} (also under /api/v1).",
    405: "Method {method} is not allowed on {path}.",
    413: "The request body is larger than the {limit} bytes allowed (KEYRELAY_MAX_BODY_BYTES).",
}


def proxy_endpoints(app: Flask) -> str:
    """Every endpoint of the proxy as `METHOD /v1/path`, read from the app's routes (so
    the list cannot drift from what is served)."""
    served = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] != "proxy":  # the /v1 blueprint, not its /api/v1 twin
            continue
        path = rule.rule
        for argument in rule.arguments:  # <path:model_id> → {model_id}
            path = re.sub(rf"<(?:[^:<>]+:)?{argument}>", f"{{{argument}}}", path)
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        served += [f"{method} {path}" for method in methods]
    return ", ".join(served)


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


def _form_page(message: str):
    """The page a dashboard form was sent from, with the message in its flash area (the
    same page, not an error page). Only a page whose URL saves nothing is rendered again;
    otherwise, or if that fails, the error page."""
    try:
        referrer = urlsplit(request.referrer or "")
        path = referrer.path if referrer.netloc == request.host else request.path
        adapter = current_app.url_map.bind_to_environ(request.environ)
        rule, args = adapter.match(path, method="GET", return_rule=True)
        if "POST" in (rule.methods or ()):  # its view would save again
            raise LookupError(rule.rule)
        flash(message, "error")
        response = make_response(current_app.view_functions[rule.endpoint](**args))
    except Exception:  # no such page, or it failed: the plain message
        get_flashed_messages()  # shown once, by the page below
        response = make_response(_page(503, message))
    response.status_code = 503
    return response


def register(app: Flask) -> None:
    """Install the handlers on the app."""

    @app.url_value_preprocessor
    def ids_in_range(endpoint, values) -> None:
        """An `<int:…>` id past SQLite's integers names nothing: 404, on every route."""
        for name, value in (values or {}).items():
            if isinstance(value, int) and not -MAX_SQL_INT - 1 <= value <= MAX_SQL_INT:
                if not _is_api():
                    abort(404)
                raise GatewayError(
                    404,
                    f"Nothing has {name} {value}: ids go up to {MAX_SQL_INT}.",
                    code="not_found",
                    param=name,
                )

    @app.errorhandler(GatewayError)
    def gateway_error(error: GatewayError):
        return error_response(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        # A 405 names the methods the path takes (RFC 9110's Allow), as werkzeug's own does.
        allow = {k: v for k, v in error.get_headers() if k == "Allow"}
        if not _is_api():
            page = _page(error.code, _PAGE_MESSAGES.get(error.code, error.description))
            return page[0], page[1], {**(page[2] if len(page) > 2 else {}), **allow}
        template = _HTTP_MESSAGES.get(error.code, error.description or error.name)
        message = template.format(
            path=request.path,
            method=request.method,
            limit=app.config["MAX_CONTENT_LENGTH"],
            endpoints=proxy_endpoints(app),
        )
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        failed = GatewayError(error.code, message, code=code.get(error.code))
        failed.headers.update(allow)
        return error_response(failed)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        with contextlib.suppress(Exception):  # the connection may be gone already
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

    @app.errorhandler(DataError)
    def value_refused(error: DataError):
        """A value PostgreSQL refuses that SQLite stores (a NUL character, text longer than
        its column, a number past its range): bad input, so a 400, nothing saved."""
        db.session.rollback()
        text = str(error.orig)
        if "NUL (0x00)" in text:
            message = "Text may not contain the NUL character (\\u0000)."
        elif "value too long" in text:
            message = "A text is longer than the database takes."
        elif "out of range" in text:
            message = "A number is out of range for the database."
        else:
            return unexpected(error)
        if not _is_api():
            return _page(400, message)
        return error_response(GatewayError(400, message, code="invalid_value"))

    @app.errorhandler(DBAPIError)
    @app.errorhandler(PoolTimeout)
    @app.errorhandler(sqlite3.OperationalError)
    def database_unusable(error: Exception):
        """A database that cannot be used now: write-locked by another process, or down
        (stopped, restarting, unreachable). Whatever was under way is rolled back whole;
        the answer is a 503 with Retry-After (on a dashboard form: the message on the
        form's page; elsewhere on the dashboard: a page saying so)."""
        if not database_down(error):
            return unexpected(error)
        with contextlib.suppress(Exception):  # the connection may be gone already
            db.session.rollback()
        refused = database_unavailable(error)
        log.warning(
            "database unusable (%s): %s %s refused with 503",
            refused.code,
            request.method,
            request.path,
        )
        if _is_api():
            return error_response(refused)
        from blueprints.web import htmx, refuse

        if htmx():
            response = refuse(refused.message, 503)
        elif database_locked(error):
            response = _form_page(refused.message)
        else:  # re-rendering a page would need the database again
            response = make_response(_page(503, refused.message))
        response.headers.update(refused.headers)
        return response

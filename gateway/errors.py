"""Errors that become an OpenAI-shaped error response on /v1."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc


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


# Seconds a client is told to wait when KeyRelay cannot keep its books for a moment (a
# lock held elsewhere is usually shorter than an outage).
UNAVAILABLE_RETRY_AFTER = "5"
BUSY_RETRY_AFTER = "2"
JOURNAL_FULL = (
    "KeyRelay cannot record requests right now: its booking journal cannot be written (the "
    "disk is full, or its folder is not writable). Retry in a few seconds."
)
DATABASE_UNAVAILABLE = (
    "KeyRelay's database cannot be reached right now. Nothing was changed; retry in a few seconds."
)


def unavailable(message: str, code: str, retry_after: str = UNAVAILABLE_RETRY_AFTER):
    """A 503 with Retry-After: KeyRelay itself cannot serve for a moment."""
    return GatewayError(
        503, message, type="server_error", code=code, headers={"Retry-After": retry_after}
    )


def journal_full() -> GatewayError:
    """The journal cannot take what an answer needs written: refused rather than lost."""
    return unavailable(JOURNAL_FULL, "journal_full")


def database_unavailable(error: BaseException) -> GatewayError:
    """The 503 for a database that cannot be used now (busy with a lock, or down)."""
    if database_locked(error):
        return unavailable(
            "The database is busy: another process holds its write lock. Nothing was "
            "changed; try again in a few seconds.",
            "database_busy",
            BUSY_RETRY_AFTER,
        )
    return unavailable(DATABASE_UNAVAILABLE, "database_unavailable")


def database_locked(error: BaseException) -> bool:
    """Whether a database error is a lock held elsewhere past the busy timeout."""
    text = str(getattr(error, "orig", error)).lower()
    # SQLite's busy timeout, or PostgreSQL's lock_timeout (gateway.store.configure_postgresql)
    return any(
        words in text
        for words in ("database is locked", "database table is locked", "due to lock timeout")
    )


# OperationalErrors that are a statement's own fault (SQLite raises these as operational).
_STATEMENT_FAULTS = ("no such table", "no such column", "has no column", "syntax error")
_DRIVER_CLASSES = {"OperationalError", "InterfaceError"}


def database_down(error: BaseException) -> bool:
    """Whether an error says the database cannot be used now (stopped, restarting,
    unreachable, its disk full, a lock held elsewhere), not that a statement is wrong."""
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection came free
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig
    # The drivers' own classes (sqlite3, psycopg), from the writer's raw connections too.
    if not any(cls.__name__ in _DRIVER_CLASSES for cls in type(error).__mro__):
        return False
    text = str(error).lower()
    return not any(fault in text for fault in _STATEMENT_FAULTS)

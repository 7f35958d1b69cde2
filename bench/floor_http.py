"""The fastest Python floor: the bare Flask pass-through of floor_app.py, forwarding with
`http.client` and a keep-alive pool per process (the client kind KeyRelay uses).

It mirrors gateway/providers/http.py's pool without its timeouts and checks beyond the
one that keeps reuse safe: idle connections in a LIFO deque per process (append/pop are
atomic, so greenlets share it safely), an idle connection the upstream closed is dropped
before reuse (a zero-timeout poll of its socket), and a text/event-stream answer is
relayed chunk by chunk (`read1`) from a generator that gives the connection back at the
end. No auth, limits or accounting.
"""

from __future__ import annotations

import http.client
import os
import select
from collections import deque
from urllib.parse import urlsplit

from flask import Flask, Response, request

UPSTREAM = urlsplit(os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8080"))
HOST, PORT = UPSTREAM.hostname or "127.0.0.1", UPSTREAM.port or 80
PREFIX = UPSTREAM.path.rstrip("/")
POOL_MAXSIZE = int(os.environ.get("FLOOR_POOL_MAXSIZE", "256"))
READ_SIZE = 65536
HEADERS = {"Content-Type": "application/json"}

app = Flask(__name__)
_idle: deque[http.client.HTTPConnection] = deque()


def _os_poll():
    """The operating system's poll: a zero-timeout check needs no gevent hub switch."""
    try:
        from gevent import monkey
    except ImportError:
        return select.poll
    return monkey.get_original("select", "poll")


_poll = _os_poll()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed (or is readable) while in the pool."""
    if conn.sock is None:
        return True
    poller = _poll()
    poller.register(conn.sock, select.POLLIN)
    return bool(poller.poll(0))


def _connection() -> http.client.HTTPConnection:
    """An idle keep-alive connection to the upstream, or a new one."""
    while _idle:
        try:
            conn = _idle.pop()
        except IndexError:
            break
        if not _dropped(conn):
            return conn
        conn.close()
    conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
    conn.connect()
    return conn


def _release(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
    """Give the connection back for the next request (or close it when it must close)."""
    if resp.will_close or len(_idle) >= POOL_MAXSIZE:
        conn.close()
    else:
        _idle.append(conn)


def _relay(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse):
    """Yield the upstream body as it arrives, then give the connection back."""
    done = False
    try:
        while chunk := resp.read1(READ_SIZE):
            yield chunk
        resp.close()  # read1 leaves a Content-Length body open at its end
        done = True
    finally:
        if done:
            _release(conn, resp)
        else:
            conn.close()


@app.post("/<path:path>")
def forward(path: str) -> Response:
    """Forward the POST body upstream and relay status, content type and body."""
    conn = _connection()
    try:
        conn.request("POST", f"{PREFIX}/{path}", body=request.get_data(), headers=HEADERS)
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException):
        conn.close()
        raise
    content_type = resp.getheader("Content-Type", "application/json")
    if content_type.startswith("text/event-stream"):
        return Response(_relay(conn, resp), status=resp.status, content_type=content_type)
    try:
        data = resp.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        raise
    _release(conn, resp)
    return Response(data, status=resp.status, content_type=content_type)


@app.get("/healthz")
def healthz() -> tuple[str, int]:
    """Answer 200 once the worker is up."""
    return "ok", 200

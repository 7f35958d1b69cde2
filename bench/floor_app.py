"""The Python floor: a bare Flask pass-through with no auth, limits or accounting.

It forwards the request body to FLOOR_UPSTREAM + the request path with one
urllib3.PoolManager per process (keep-alive) and relays the answer; an upstream
text/event-stream answer is relayed chunk by chunk from a generator.
"""

from __future__ import annotations

import os

import urllib3
from flask import Flask, Response, request

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8080").rstrip("/")
POOL_MAXSIZE = int(os.environ.get("FLOOR_POOL_MAXSIZE", "256"))

app = Flask(__name__)
_pool: urllib3.PoolManager | None = None
_pool_pid = 0


def pool() -> urllib3.PoolManager:
    """Return this process's PoolManager, made after fork on first use."""
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        _pool = urllib3.PoolManager(num_pools=64, maxsize=POOL_MAXSIZE, block=False, retries=False)
        _pool_pid = os.getpid()
    return _pool


def _relay(resp: urllib3.BaseHTTPResponse):
    """Yield the upstream body chunk by chunk, then give the connection back."""
    try:
        yield from resp.stream(amt=None)
    finally:
        resp.release_conn()


@app.post("/<path:path>")
def forward(path: str) -> Response:
    """Forward the POST body upstream and relay status, content type and body."""
    resp = pool().request(
        "POST",
        f"{UPSTREAM}/{path}",
        body=request.get_data(),
        headers={"Content-Type": "application/json"},
        preload_content=False,
    )
    content_type = resp.headers.get("Content-Type", "application/json")
    if content_type.startswith("text/event-stream"):
        return Response(_relay(resp), status=resp.status, content_type=content_type)
    try:
        data = resp.read()
    finally:
        resp.release_conn()
    return Response(data, status=resp.status, content_type=content_type)


@app.get("/healthz")
def healthz() -> tuple[str, int]:
    """Answer 200 once the worker is up."""
    return "ok", 200

"""The Flask/WSGI layer of /v1 in-process: µs per call of the app's WSGI callable, with
the gateway's work replaced by a fixed answer (the headers of a client key's chat answer),
beside the bare floor's Flask app.

What Flask does around a /v1 request (the request context, routing, the session, the app's
hooks, the Response and its headers) is timed apart from the proxy and the machine's load:
best of several repeats of many calls (CPU time of this process), no sockets. The
gateway's `serve` is swapped for a stub that returns a fixed ProxyResponse (a benchmark,
not a test), and auth is the master key's (one dict lookup), so the figure is the layer,
not the gateway.

    PYTHONPATH=$PWD .venv/bin/python bench/flask_layer.py
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

import upstream as up

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
REPLY = up.chat_body().encode()


def environ(path: str, token: str) -> dict:
    """A WSGI environ like gunicorn's for POST path with a JSON body."""
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "RAW_URI": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(BODY),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
        "wsgi.input_terminated": True,
    }


def call(app, path: str, token: str) -> None:
    """One request through the WSGI callable, body consumed, closed, as gunicorn does."""

    def start_response(status, headers, exc_info=None):
        return None

    result = app(environ(path, token), start_response)
    try:
        for _ in result:
            pass
    finally:
        if hasattr(result, "close"):
            result.close()


def best_us(app, path: str, token: str, calls: int, repeats: int) -> float:
    """Best-of-repeats mean µs per call."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(calls):
            call(app, path, token)
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


def keyrelay_app(folder: str):
    """create_app with a fresh instance; Gateway.serve answers a fixed chat completion."""
    os.environ.update(
        KEYRELAY_INSTANCE_PATH=folder,
        KEYRELAY_MASTER_KEY="kr-bench-layer",
        KEYRELAY_SCHEDULER="0",
        KEYRELAY_METRICS="0",
    )
    from app import create_app
    from gateway.proxy.relay import ProxyResponse
    from gateway.service import Gateway

    headers = {
        "Content-Type": "application/json",
        "x-keyrelay-request-id": "req_bench",
        "x-keyrelay-attempts": "1",
        "x-keyrelay-provider": "openai",
        "x-ratelimit-limit-requests": "10000000",  # a client key's limits (ab.py's)
        "x-ratelimit-remaining-requests": "9999999",
        "x-ratelimit-reset-requests": "60s",
        "x-ratelimit-limit-tokens": "1000000000",
        "x-ratelimit-remaining-tokens": "999999982",
        "x-ratelimit-reset-tokens": "60s",
        "x-keyrelay-cost": "0.000010",
    }
    Gateway.serve = lambda self, *a, **k: ProxyResponse(200, dict(headers), REPLY)
    return create_app()


def main(argv: list[str] | None = None) -> int:
    """Time the floor's Flask app and KeyRelay's /v1 layer; print µs per call."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    import floor_http

    with tempfile.TemporaryDirectory() as folder:
        app = keyrelay_app(folder)
        floor = floor_http.app

        @floor.post("/bench-layer")
        def bench_layer():
            """The floor's route without its upstream call: the bare Flask cost."""
            from flask import Response, request

            request.get_data()
            return Response(REPLY, status=200, content_type="application/json")

        floor_us = best_us(floor, "/bench-layer", "", args.calls, args.repeats)
        kr_us = best_us(app, "/v1/chat/completions", "kr-bench-layer", args.calls, args.repeats)
    print(f"bare Flask (floor app, no upstream): {floor_us:.1f} µs per call")
    print(f"KeyRelay /v1/chat/completions, serve stubbed: {kr_us:.1f} µs per call")
    print(f"KeyRelay's layer above the bare floor: {kr_us - floor_us:+.1f} µs per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())

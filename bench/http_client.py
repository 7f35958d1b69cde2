"""Per-call cost of Python HTTP clients against the fake nginx upstream (one thread).

Run from the repo root: `.venv/bin/python bench/http_client.py [-n 5000]`.
Needs `requests` in the venv for its row (`.venv/bin/pip install requests`); it is
a bench-only tool and not a KeyRelay dependency.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import time
from collections.abc import Callable

import upstream as up
import urllib3

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-0001"}
PATH = "/v1/chat/completions"


def clients(port: int) -> dict[str, Callable[[], bytes]]:
    """Return name -> zero-argument call doing one keep-alive POST and reading the body."""
    url = f"http://127.0.0.1:{port}{PATH}"
    calls: dict[str, Callable[[], bytes]] = {}
    try:
        import requests
    except ImportError:
        print("requests not installed in this venv: skipping its row", file=sys.stderr)
    else:
        session = requests.Session()
        calls["requests.Session().post"] = lambda: (
            session.post(url, data=BODY, headers=HEADERS).content
        )
    manager = urllib3.PoolManager(retries=False)
    calls["urllib3.PoolManager().request"] = lambda: (
        manager.request("POST", url, body=BODY, headers=HEADERS).data
    )
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1, retries=False)
    calls["urllib3.HTTPConnectionPool.urlopen"] = lambda: (
        pool.urlopen("POST", PATH, body=BODY, headers=HEADERS).data
    )
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def raw() -> bytes:
        """POST with http.client on one kept-alive connection."""
        conn.request("POST", PATH, body=BODY, headers=HEADERS)
        return conn.getresponse().read()

    calls["http.client.HTTPConnection"] = raw
    return calls


def time_calls(call: Callable[[], bytes], n: int) -> list[float]:
    """Return per-call wall times in microseconds for n calls, after 200 warm-up calls."""
    for _ in range(200):
        call()
    times = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        data = call()
        times.append((clock() - start) / 1e3)
        if not data:
            raise RuntimeError("empty response body")
    return times


def main(argv: list[str] | None = None) -> int:
    """Start nginx, time each client, print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000, help="POSTs per client")
    args = ap.parse_args(argv)
    try:
        _, port = up.start_nginx()
        rows = []
        for name, call in clients(port).items():
            times = time_calls(call, args.n)
            rows.append((name, statistics.fmean(times), statistics.median(times)))
    finally:
        up.stop_all()
    print(f"{args.n} keep-alive POSTs each, one thread, against nginx on loopback\n")
    print("| client | mean µs/call | p50 µs/call |\n|---|---|---|")
    for name, mean, p50 in rows:
        print(f"| `{name}` | {mean:.1f} | {p50:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

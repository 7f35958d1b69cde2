"""What /metrics costs a request: µs of the sink's calls per booked request, in process.

A booked request reports itself once (`sink.request`: its count, tokens, cost, latency and
time-to-first-token histograms) and each of its upstream attempts once (`sink.attempt`).
This times those two calls many times over, as a gunicorn gevent worker makes them (gevent
monkey-patched, metrics files in a folder as under gunicorn), against metrics off (the
no-op sink). Each case runs in a fresh interpreter, since the metrics library reads its
folder at import.

    PYTHONPATH=$PWD .venv/bin/python bench/metrics_cost.py            # 200,000 calls, 5 runs
    PYTHONPATH=$PWD .venv/bin/python bench/metrics_cost.py --calls 50000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "off": "metrics off (the no-op sink)",
    "gunicorn": "metrics on, several workers (a metrics folder, as gunicorn.conf.py sets)",
    "single": "metrics on, one process (`flask run`, no metrics folder)",
}


def _records(count: int):
    """`count` booked requests as the proxy makes them: a few models and statuses, half
    of them streamed (with a time to first token)."""
    from datetime import UTC, datetime

    from gateway.ledger.accounting import RequestRecord
    from gateway.ledger.usage import Usage

    now = datetime.now(UTC)
    models = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4", "gemini-2.5-flash")
    out = []
    for number in range(count):
        rec = RequestRecord(now, "chat.completions", models[number % 4], number % 2 == 0)
        rec.status_code = 200 if number % 10 else 429
        rec.usage = Usage(900 + number % 50, 120 + number % 30)
        rec.cost_micros = 1234 + number
        rec.latency_ms = 40 + number % 3000
        rec.ttft_ms = 25 + number % 800 if rec.streamed else None
        out.append(rec)
    return out


def measure(case: str, calls: int) -> float:
    """µs per booked request (one `request` and one `attempt`) for one case, in this process."""
    from gevent import monkey

    monkey.patch_all()  # as gunicorn's gevent worker does before it loads the app
    from gateway import metrics

    if case == "off":
        metrics.install(None)
    else:
        from gateway.prometheus import PrometheusSink

        metrics.install(PrometheusSink())
    sink = metrics.sink
    records = _records(64)
    for rec in records:  # the labelled series exist, as in a warm worker
        sink.request(rec, "default")
        sink.attempt("openai", 7, "ok")
    started = time.process_time()
    for number in range(calls):
        sink.request(records[number & 63], "default")
        sink.attempt("openai", 7, "ok")
    return (time.process_time() - started) / calls * 1e6


def _child(case: str, calls: int) -> float:
    """Run `measure` for one case in a fresh interpreter (its own metrics folder)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as folder:
        if case == "gunicorn":
            env["PROMETHEUS_MULTIPROC_DIR"] = folder
        done = subprocess.run(
            [sys.executable, __file__, "--child", case, "--calls", str(calls)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout)["us"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps({"us": measure(args.child, args.calls)}))
        return 0
    results: dict[str, list[float]] = {case: [] for case in CASES}
    for _ in range(args.runs):  # cases interleaved, so a busy stretch hits them all
        for case in CASES:
            results[case].append(_child(case, args.calls))
    off = statistics.median(results["off"])
    print(f"{args.calls} booked requests x {args.runs} runs (one request + one attempt each)")
    print("| case | µs per request, median | min | max | over metrics off |")
    print("|---|---|---|---|---|")
    for case, values in results.items():
        median = statistics.median(values)
        print(
            f"| {CASES[case]} | {median:.2f} | {min(values):.2f} | {max(values):.2f} "
            f"| {median - off:+.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

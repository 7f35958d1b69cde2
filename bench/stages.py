"""Where KeyRelay's CPU goes per request, stage by stage, found with py-spy under load.

KeyRelay is started as bench/ab.py starts it (gevent x2, the repo's gunicorn.conf.py,
/metrics on, client keys with limits and a budget) and loaded by wrk at 64 clients, chat
then stream. Over one window per mode, each worker is sampled by `py-spy record --format
raw` (collapsed stacks; idle stacks are left out) while its CPU time is read from
/proc/<pid>/stat, and the requests served in the window are counted (nginx's counter: one
upstream request per KeyRelay request; wrk's rate is shown beside it). A sample belongs to
the stage of its deepest frame that a rule of STAGES matches; a stage's CPU µs per request
is its share of the samples × the workers' CPU time ÷ the requests.

    .venv/bin/python bench/stages.py                 # 15 s per mode
    .venv/bin/python bench/stages.py --seconds 30 --modes chat --json bench/out/spy.json
    .venv/bin/python bench/stages.py --replay bench/out/spy.json   # rules changed
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import ab
import run
import upstream as up

# (tier, stage, file path part, function name or "" for any). A sample's stage: the deepest
# of its frames that a tier-1 row matches; failing that, the deepest a tier-2 row matches;
# then tier 3 (the server loop around everything); else "other". So gevent's socket frames
# under http.client count to the upstream call, not to gevent, and werkzeug building a
# Response for a view counts to Flask/WSGI, not to the view.
STAGES: list[tuple[int, str, str, str]] = [
    # The request-log writer and the booking journal (after the answer, off the reply).
    (1, "writer", "gateway/ledger/journal.py", ""),
    (1, "writer", "gateway/ledger/books.py", ""),
    (1, "writer", "gateway/store.py", ""),
    (1, "writer", "sqlalchemy/", ""),
    (1, "writer", "sqlite3/", ""),
    # Prometheus counters (the sink and the client library's multiprocess files).
    (1, "metrics", "gateway/prometheus.py", ""),
    (1, "metrics", "gateway/metrics.py", ""),
    (1, "metrics", "prometheus_client/", ""),
    # Booking: pricing, settling the ticket, accounting, the key cache told.
    (1, "booking", "gateway/proxy/booking.py", ""),
    (1, "booking", "gateway/ledger/", ""),
    (1, "booking", "gateway/service.py", "book"),
    # The relay: the upstream answer passed on (scrub, usage, cost header, SSE).
    (1, "relay", "gateway/proxy/relay.py", ""),
    (1, "relay", "gateway/keys/scrub.py", ""),
    (1, "relay", "gateway/codecs/sse.py", ""),
    (1, "relay", "gateway/codecs/stream.py", ""),
    (1, "relay", "gateway/codecs/usage.py", ""),
    (1, "relay", "gateway/providers/openai_sse.py", ""),
    (1, "relay", "gateway/providers/gemini_sse.py", ""),
    (1, "relay", "gateway/providers/http.py", "chunks"),
    (1, "relay", "gateway/providers/http.py", "read"),
    # The upstream call: connection from the pool, request out, status and headers in.
    (1, "upstream call", "gateway/providers/", ""),
    (1, "upstream call", "http/client.py", ""),
    (1, "upstream call", "gateway/proxy/attempts.py", ""),
    # Selection: candidates, routes, pins, the key pool's order, the breaker.
    (1, "selection", "gateway/proxy/candidates.py", ""),
    (1, "selection", "gateway/proxy/chain.py", ""),
    (1, "selection", "gateway/proxy/pins.py", ""),
    (1, "selection", "gateway/proxy/breaker.py", ""),
    (1, "selection", "gateway/keys/selection.py", ""),
    (1, "selection", "gateway/keys/cache.py", ""),
    (1, "selection", "gateway/keys/catalog.py", ""),
    (1, "selection", "gateway/routes.py", ""),
    (1, "selection", "gateway/service.py", "_try_keys"),
    # Admission: limits, budgets, in-flight counts.
    (1, "admission", "gateway/proxy/admission.py", ""),
    (1, "admission", "gateway/limits/", ""),
    (1, "admission", "gateway/members.py", ""),
    (1, "admission", "gateway/service.py", "_admit"),
    # Auth: the bearer token to a caller.
    (1, "auth", "gateway/keys/client_keys.py", ""),
    (1, "auth", "blueprints/proxy.py", "authenticate"),
    (1, "auth", "blueprints/common.py", "bearer_token"),
    # Parse: the body read and decoded, checked, the dialect's typed request.
    (1, "parse", "gateway/codecs/", ""),
    (1, "parse", "gateway/dialects/", ""),
    (1, "parse", "gateway/validation.py", ""),
    (1, "parse", "gateway/proxy/client_headers.py", ""),
    (1, "parse", "gateway/proxy/infer.py", ""),
    (1, "parse", "blueprints/proxy.py", "_json_body"),
    (1, "parse", "blueprints/proxy.py", "_read"),
    (1, "parse", "gateway/service.py", "_record"),
    # The app's own Flask glue: the ProxyResponse made a Flask Response, app-wide hooks.
    (1, "Flask/WSGI", "blueprints/proxy.py", "_to_flask"),
    (1, "Flask/WSGI", "blueprints/proxy.py", "cost_header"),
    (1, "Flask/WSGI", "app.py", ""),  # the repo's app.py: its app-wide hooks
    # The rest of the gateway's own per-request code (service.serve and the views) ...
    (2, "other", "gateway/", ""),
    (2, "other", "blueprints/", ""),
    # ... and Flask around and under it: routing, contexts, hooks, Response, sessions.
    (2, "Flask/WSGI", "flask/", ""),
    (2, "Flask/WSGI", "werkzeug/", ""),
    (2, "Flask/WSGI", "flask_login/", ""),
    (2, "Flask/WSGI", "flask_wtf/", ""),
    (2, "Flask/WSGI", "htmx_flask/", ""),
    # The server loop: gunicorn's worker and gevent's hub, reading and writing the client.
    (3, "Flask/WSGI", "gunicorn/", ""),
    (3, "Flask/WSGI", "gevent/", ""),
]
STAGE_ORDER = [
    "parse",
    "auth",
    "admission",
    "selection",
    "upstream call",
    "relay",
    "booking",
    "writer",
    "metrics",
    "Flask/WSGI",
    "other",
]
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_frame(frame: str) -> tuple[str, str]:
    """(function, file) of one py-spy frame `func (path/file.py:123)`."""
    found = FRAME.match(frame.strip())
    return (found["func"], found["file"]) if found else (frame.strip(), "")


def matches(part: str, file: str) -> bool:
    """Whether a rule's file part names this file: a bare module name (`app.py`) the
    repo's top-level file itself, anything else a part of the path."""
    return file == part if "/" not in part else part in file


def stage_of(frames: list[str]) -> str:
    """The stage of a stack (root first): its deepest frame that a rule of the lowest
    tier matches."""
    parsed = [parse_frame(frame) for frame in reversed(frames)]
    for tier in (1, 2, 3):
        for func, file in parsed:
            for rule_tier, stage, part, name in STAGES:
                if rule_tier == tier and matches(part, file) and (not name or name == func):
                    return stage
    return "other"


def read_raw(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    """The collapsed stacks of a py-spy raw file recorded with --threads, by thread:
    "main" (the one serving requests: gunicorn's frames in it) or "other"."""
    threads: dict[str, list] = collections.defaultdict(list)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            label, _, frames = stack.partition(";")
            threads[label].append((frames.split(";"), int(count)))
    out: dict[str, list] = {"main": [], "other": []}
    for stacks in threads.values():
        serving = any("gunicorn/" in frame for frames, _ in stacks for frame in frames)
        out["main" if serving else "other"] += stacks
    return out


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time from /proc: the process's (all threads), or one thread's."""
    stat = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def cpu_split(pid: int) -> dict[str, float]:
    """CPU seconds of a worker's main thread (gunicorn's loop and every request's
    greenlet; its tid is the pid) and of its other threads (the request-log writer...)."""
    total, main = cpu_seconds(pid), cpu_seconds(pid, pid)
    return {"main": main, "other": max(total - main, 0.0)}


def workers(master: int) -> list[int]:
    """The gunicorn master's worker pids."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def profile_mode(target, proc, nginx_port: int, mode: str, args) -> dict:
    """Load KeyRelay in one mode and sample its workers over a window; the window's figures."""
    spy = str(Path(sys.executable).parent / "py-spy")
    pids = workers(proc.pid)
    result: dict = {}
    load = threading.Thread(
        target=lambda: result.update(run.run_wrk(target, mode, 64, 2, args.seconds + 3))
    )
    load.start()
    time.sleep(1.5)  # wrk connected, the workers busy
    raw = {pid: up.OUT_DIR / f"spy-{mode}-{pid}.txt" for pid in pids}
    served = run.upstream_requests(nginx_port)
    cpu = {pid: cpu_split(pid) for pid in pids}
    started = time.monotonic()
    spies = [
        subprocess.Popen(
            [spy, "record", "--format", "raw", "--threads", "--nonblocking"]
            + ["--rate", str(args.rate)]
            + ["--duration", str(args.seconds), "--pid", str(pid), "--output", str(raw[pid])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]
    time.sleep(args.seconds)
    cpu = {pid: {k: v - cpu[pid][k] for k, v in cpu_split(pid).items()} for pid in pids}
    window = time.monotonic() - started
    served = run.upstream_requests(nginx_port) - served - 1
    for spy_proc in spies:
        spy_proc.wait(timeout=60)
    load.join()
    stacks: dict[str, list] = {"main": [], "other": []}
    for pid in pids:
        for thread, found in read_raw(raw[pid]).items():
            stacks[thread] += found
    return {
        "mode": mode,
        "window": window,
        "cpu": sum(sum(split.values()) for split in cpu.values()),
        "thread_cpu": {t: sum(split[t] for split in cpu.values()) for t in ("main", "other")},
        "requests": served,
        "wrk_rps": result.get("rps", 0.0),
        "stacks": stacks,
        "raw": {pid: str(path) for pid, path in raw.items()},
    }


def stage_table(figures: dict) -> tuple[dict[str, float], int]:
    """CPU µs per request per stage, and the number of samples. Each thread kind's CPU
    time is shared out by its own samples: a thread that waits for a core on a busy
    machine is sampled as running, so samples are compared only within a thread."""
    out = dict.fromkeys(STAGE_ORDER, 0.0)
    seen = 0
    for thread, stacks in figures["stacks"].items():
        samples = collections.Counter()
        for frames, count in stacks:
            samples[stage_of(frames)] += count
        total = sum(samples.values())
        seen += total
        per_request = figures["thread_cpu"][thread] * 1e6 / max(figures["requests"], 1)
        for stage in STAGE_ORDER:
            out[stage] += samples[stage] / total * per_request if total else 0.0
    return out, seen


def leaves(figures: dict, top: int = 15) -> list[tuple[str, float]]:
    """The leaf functions with the most CPU: (function (file), share of the workers' CPU)."""
    weights = collections.Counter()
    for thread, stacks in figures["stacks"].items():
        total = sum(count for _, count in stacks) or 1
        cpu = figures["thread_cpu"][thread] / max(figures["cpu"], 1e-9)
        for frames, count in stacks:
            func, file = parse_frame(frames[-1])
            name = f"{func} ({short(file)})" if func else "(no Python frame)"
            weights[name] += count / total * cpu
    return weights.most_common(top)


def short(file: str) -> str:
    """A file path from its package on (site-packages and the repo cut off)."""
    for cut in ("site-packages/", "python3.11/", str(up.REPO_DIR) + "/"):
        if cut in file:
            return file.split(cut, 1)[1]
    return file


def report(results: list[dict], args, machine: str) -> list[str]:
    """The stage table (a column per mode) and each mode's top leaf functions."""
    tables = {r["mode"]: stage_table(r) for r in results}
    head = " | ".join(f"{r['mode']} µs/req | {r['mode']} share" for r in results)
    lines = [
        f"Machine: {machine}.",
        f"Command: `{' '.join(['bench/stages.py', *sys.argv[1:]])}` ({args.server}, 64 clients, "
        f"{args.seconds} s window per mode, py-spy {args.rate} Hz, --nonblocking).",
        "",
    ]
    for r in results:
        lines.append(
            f"- {r['mode']}: {r['requests']} requests in {r['window']:.1f} s "
            f"({r['requests'] / r['window']:.0f}/s; wrk {r['wrk_rps']:.0f}/s), workers' CPU "
            f"{r['cpu']:.2f} s = {r['cpu'] * 1e6 / max(r['requests'], 1):.0f} µs/req "
            f"(main thread {r['thread_cpu']['main']:.2f} s, others "
            f"{r['thread_cpu']['other']:.2f} s), "
            f"{tables[r['mode']][1]} samples"
        )
    lines += ["", f"| stage | {head} |", "|---|" + "---|---|" * len(results)]
    for stage in STAGE_ORDER:
        cells = []
        for r in results:
            value, _ = tables[r["mode"]]
            total = sum(value.values()) or 1
            cells.append(f"{value[stage]:.1f} | {100 * value[stage] / total:.1f} %")
        lines.append(f"| {stage} | {' | '.join(cells)} |")
    totals = " | ".join(f"{sum(tables[r['mode']][0].values()):.1f} | 100 %" for r in results)
    lines.append(f"| **total** | {totals} |")
    for r in results:
        lines += [
            "",
            f"Top leaf functions, {r['mode']}:",
            "",
            "| function | share of CPU |",
            "|---|---|",
        ]
        lines += [f"| `{name}` | {100 * share:.1f} % |" for name, share in leaves(r)]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Start nginx and KeyRelay, profile each mode under load, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=15, help="sampling window per mode")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--modes", default="chat,stream", help="comma list of chat, stream")
    ap.add_argument(
        "--server", default="keyrelay", choices=("keyrelay", "floor-http", "floor-urllib3")
    )
    ap.add_argument("--json", default="", help="save the figures and stacks to this file")
    ap.add_argument("--replay", default="", help="print the tables of a --json file again")
    args = ap.parse_args(argv)
    if args.replay:  # the stage rules changed: the same samples, attributed again
        saved = json.loads(Path(args.replay).read_text())
        args.seconds, args.rate = saved["seconds"], saved["rate"]
        args.server = saved.get("server", "keyrelay")
        print("\n".join(report(saved["results"], args, saved["machine"])))
        return 0
    up.OUT_DIR.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        _, nginx_port = up.start_nginx()
        if args.server == "keyrelay":
            target, proc, keys = ab.start_keyrelay(nginx_port)
        else:  # the same table for a floor: what Flask and gunicorn cost with nothing else
            module = {"floor-http": "floor_http", "floor-urllib3": "floor_app"}[args.server]
            (target, proc), keys = ab.start_floor(module, args.server, nginx_port), {}
        for mode in [m for m in args.modes.split(",") if m]:
            ab.use_key(target, keys, mode)
            run.smoke(target, mode)
            run.run_wrk(target, mode, 64, 2, 2)  # warm-up
            results.append(profile_mode(target, proc, nginx_port, mode, args))
    finally:
        up.stop_all()
    print("\n".join(report(results, args, ab.machine())))
    if args.json:
        saved = {"seconds": args.seconds, "rate": args.rate, "server": args.server}
        saved["machine"] = ab.machine()
        Path(args.json).write_text(json.dumps({**saved, "results": results}) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

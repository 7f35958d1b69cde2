"""The performance goals against the fastest floor, measured in alternation.

bench/run.py measures one server after the other, minutes apart; on a shared VM whose speed
drifts by a third within minutes their ratio is then mostly noise. Here both floors
(`floor_http.py`, http.client pool; `floor_app.py`, urllib3) and KeyRelay run side by side,
each idle while another is measured, and every figure is taken in rounds whose order
rotates through the three. Each round compares KeyRelay with the faster floor of that
round; the median over the rounds is the figure.

KeyRelay runs as in production (gevent x2, the repo's gunicorn.conf.py) with /metrics on
(KEYRELAY_METRICS=1, whatever the default) and is called with client keys that carry rate
limits, a parallel limit and a budget, so auth, limits, budgets, accounting, the journal
and the metrics are all on the measured path.

    .venv/bin/python bench/ab.py                    # 7 rounds: 3 s @64, 2 s @1 per server
    .venv/bin/python bench/ab.py --rounds 11 --seconds 3 --json bench/out/ab.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import statistics
import sys
from pathlib import Path

import run
import upstream as up

FLOORS = ("floor-http", "floor-urllib3")
PROFILES = {"chat": "bench", "stream": "bench-stream"}  # run.register_keys' profiles
GOAL_RATIO = 0.8  # KeyRelay req/s at 64 clients / the faster floor's
GOAL_ADDED_P50_US = 200.0  # KeyRelay p50 at 1 client - the faster floor's
GOAL_P99_RATIO = 2.0  # KeyRelay p99 at 1 client / the faster floor's
# Generous enough never to refuse a benchmark request, so they cost what they cost.
CLIENT_KEY_LIMITS = {
    "rpm_limit": 10_000_000,
    "tpm_limit": 1_000_000_000,
    "max_parallel_requests": 100_000,
    "max_budget": "1000000",
    "budget_duration": "1d",
}


def start_floor(module: str, name: str, nginx_port: int) -> tuple[run.Target, object]:
    """Start one floor (gevent x2, the repo's gunicorn.conf.py)."""
    conf, _ = run.gunicorn_conf()
    port = up.free_port()
    env = run.server_env(
        run.Server("gevent", 2), port, {"FLOOR_UPSTREAM": f"http://127.0.0.1:{nginx_port}"}
    )
    proc = run.start_gunicorn(conf, f"{module}:app", env, port, f"ab-{name}")
    return run.Target(name, f"http://127.0.0.1:{port}", run.direct_paths()), proc


def client_key(base: str, master: str, profile: str) -> str:
    """Create a client key of profile with limits and a budget; return the key."""
    payload = {"profile": profile, "name": f"ab-{profile}", **CLIENT_KEY_LIMITS}
    status, body = run.api("POST", f"{base}/api/admin/client-keys", master, payload)
    if status != 201:
        raise RuntimeError(f"POST /api/admin/client-keys for {profile}: {status} {body}")
    return body["key"]


def start_keyrelay(nginx_port: int) -> tuple[run.Target, object, dict[str, str]]:
    """Start KeyRelay as in production, metrics on; register keys and client keys."""
    conf, _ = run.gunicorn_conf()
    extra, master = run.keyrelay_env("ab")
    extra["KEYRELAY_METRICS"] = "1"
    port = up.free_port()
    env = run.server_env(run.Server("gevent", 2), port, extra)
    proc = run.start_gunicorn(conf, "app:create_app()", env, port, "ab-keyrelay")
    target = run.Target(
        "keyrelay", f"http://127.0.0.1:{port}", {m: "/v1/chat/completions" for m in run.MODES}
    )
    run.register_keys(target.base, master, nginx_port)
    keys = {mode: client_key(target.base, master, p) for mode, p in PROFILES.items()}
    return target, proc, keys


def use_key(target: run.Target, keys: dict[str, str], mode: str) -> run.Target:
    """Point the KeyRelay target at the client key of mode (its profile comes with it)."""
    if target.name == "keyrelay":
        target.auth = keys[mode]
    return target


def rotation(items: list, number: int) -> list:
    """items rotated by number: round n starts with the (n mod len)-th."""
    shift = number % len(items)
    return items[shift:] + items[:shift]


def throughput_round(targets, keys, mode: str, number: int, seconds: int) -> dict[str, float]:
    """One round of 64-client req/s, one server after the other in the round's order."""
    return {
        t.name: run.run_wrk(use_key(t, keys, mode), mode, 64, 2, seconds)["rps"]
        for t in rotation(targets, number)
    }


def latency_round(targets, keys, mode: str, number: int, seconds: int) -> dict[str, dict]:
    """One round of 1-client p50/p99 (µs), one server after the other."""
    out = {}
    for t in rotation(targets, number):
        res = run.run_wrk(use_key(t, keys, mode), mode, 1, 1, seconds)
        out[t.name] = {"p50_us": res["p50_us"], "p99_us": res["p99_us"]}
    return out


def versions() -> str:
    """gunicorn and gevent versions, as installed."""
    found = []
    for name in ("gunicorn", "gevent"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} ?")
    return ", ".join(found)


def machine() -> str:
    """One line: cores, CPU model, Python, gunicorn/gevent versions, load average."""
    cpu = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{len(os.sched_getaffinity(0))} cores, {cpu.group(1) if cpu else '?'}, "
        f"Python {platform.python_version()}, {versions()}; load average {load}"
    )


def summarize(thr: dict, lat: dict) -> dict:
    """Per-round ratios against the faster floor, their medians, and PASS/FAIL per goal."""
    goals = {}
    for mode, rounds in thr.items():
        ratios = [r["keyrelay"] / max(r[f] for f in FLOORS) for r in rounds]
        goals[f"throughput {mode} @64"] = {
            "rounds": ratios,
            "median": statistics.median(ratios),
            "goal": f">= {GOAL_RATIO}x",
            "pass": statistics.median(ratios) >= GOAL_RATIO,
        }
    for mode, rounds in lat.items():
        added = [r["keyrelay"]["p50_us"] - min(r[f]["p50_us"] for f in FLOORS) for r in rounds]
        ratio = [r["keyrelay"]["p99_us"] / min(r[f]["p99_us"] for f in FLOORS) for r in rounds]
        goals[f"added p50 {mode} @1"] = {
            "rounds": added,
            "median": statistics.median(added),
            "goal": f"<= {GOAL_ADDED_P50_US / 1e3} ms",
            "pass": statistics.median(added) <= GOAL_ADDED_P50_US,
        }
        goals[f"p99 ratio {mode} @1"] = {
            "rounds": ratio,
            "median": statistics.median(ratio),
            "goal": f"<= {GOAL_P99_RATIO}x",
            "pass": statistics.median(ratio) <= GOAL_P99_RATIO,
        }
    return goals


def shown(name: str, value: float) -> str:
    """A goal's figure: ms for added latency, × for ratios."""
    return f"{value / 1e3:+.3f} ms" if name.startswith("added") else f"{value:.2f}x"


def report(goals: dict, thr: dict, lat: dict, args) -> list[str]:
    """The markdown table of goals, then the servers' own medians."""
    lines = [
        f"Machine: {machine()}.",
        f"Command: `{' '.join(['bench/ab.py', *sys.argv[1:]])}` ({args.rounds} rounds, "
        f"{args.seconds} s @64, {args.latency_seconds} s @1 per server, order rotating).",
        "",
        "| goal | median | min | max | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for name, g in goals.items():
        lines.append(
            f"| {name} | {shown(name, g['median'])} | {shown(name, min(g['rounds']))} "
            f"| {shown(name, max(g['rounds']))} | {g['goal']} | "
            f"{'PASS' if g['pass'] else 'FAIL'} |"
        )
    lines += ["", "| server | mode | req/s @64 | p50 ms @1 | p99 ms @1 |", "|---|---|---|---|---|"]
    for name in (*FLOORS, "keyrelay"):
        for mode in run.MODES:
            rps = statistics.median(r[name] for r in thr[mode]) if thr.get(mode) else 0
            p50 = statistics.median(r[name]["p50_us"] for r in lat[mode]) if lat.get(mode) else 0
            p99 = statistics.median(r[name]["p99_us"] for r in lat[mode]) if lat.get(mode) else 0
            lines.append(f"| {name} | {mode} | {rps:.0f} | {p50 / 1e3:.3f} | {p99 / 1e3:.3f} |")
    lines.append("")
    lines.append("Server figures are medians over the rounds; each goal's ratio or difference is")
    lines.append("taken per round against the faster floor of that round, then its median.")
    return lines


def measure(targets, keys, args) -> tuple[dict, dict]:
    """Warm up, then the rounds: 64-client req/s and 1-client latency per mode."""
    for target in targets:
        for mode in run.MODES:
            use_key(target, keys, mode)
            run.smoke(target, mode)
            run.run_wrk(target, mode, 64, 2, 2)  # warm-up
    thr = {mode: [] for mode in run.MODES}
    lat = {mode: [] for mode in run.MODES}
    for number in range(args.rounds):
        for mode in run.MODES:
            rps = throughput_round(targets, keys, mode, number, args.seconds)
            thr[mode].append(rps)
            best = max(rps[f] for f in FLOORS)
            print(
                f"  round {number + 1} {mode:<6} @64 "
                + "  ".join(f"{n} {v:.0f}" for n, v in rps.items())
                + f"  = {rps['keyrelay'] / best:.2f}x",
                flush=True,
            )
        for mode in args.latency_modes:
            lat[mode].append(latency_round(targets, keys, mode, number, args.latency_seconds))
            row = lat[mode][-1]
            print(
                f"  round {number + 1} {mode:<6} @1  "
                + "  ".join(
                    f"{n} {v['p50_us'] / 1e3:.3f}/{v['p99_us'] / 1e3:.3f}" for n, v in row.items()
                )
                + " ms (p50/p99)",
                flush=True,
            )
    return thr, {m: v for m, v in lat.items() if v}


def main(argv: list[str] | None = None) -> int:
    """Start the floors and KeyRelay, measure in rotating rounds, print the goals table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="rounds (median over them)")
    ap.add_argument("--seconds", type=int, default=3, help="seconds per 64-client run")
    ap.add_argument("--latency-seconds", type=int, default=2, help="seconds per 1-client run")
    ap.add_argument(
        "--latency-modes", default="chat,stream", help="modes of the 1-client runs ('' for none)"
    )
    ap.add_argument("--json", default="", help="write the figures to this file")
    args = ap.parse_args(argv)
    args.latency_modes = [m for m in args.latency_modes.split(",") if m]
    up.OUT_DIR.mkdir(parents=True, exist_ok=True)
    try:
        _, nginx_port = up.start_nginx()
        http_floor, _ = start_floor("floor_http", "floor-http", nginx_port)
        urllib3_floor, _ = start_floor("floor_app", "floor-urllib3", nginx_port)
        keyrelay, _, keys = start_keyrelay(nginx_port)
        thr, lat = measure([http_floor, urllib3_floor, keyrelay], keys, args)
    finally:
        up.stop_all()
    goals = summarize(thr, lat)
    print()
    print("\n".join(report(goals, thr, lat, args)))
    if args.json:
        figures = {"machine": machine(), "throughput": thr, "latency": lat, "goals": goals}
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

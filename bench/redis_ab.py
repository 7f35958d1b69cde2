"""Issue 14's target: what Redis-shared limits cost (≤ 0.3 ms p50).

Two KeyRelay servers side by side (gevent x2, the repo's gunicorn.conf.py), one on this
host's files (`limits.bin`) and one with KEYRELAY_REDIS_URL pointing at a local
redis-server, each on its own SQLite file. Requests carry a client key with RPM and TPM
limits (too high to refuse anything), so every request is admitted and settled by the
limiter under test. Measured in alternation, order swapped each round (a noisy VM drifts):
1-client p50 and 64-client requests/s of the chat mode; the medians are the figures.

    .venv/bin/python bench/redis_ab.py               # 5 rounds of 3 s
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

import run
import upstream as up


def start_redis() -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server") or up.ensure_tool("redis-server", "redis-server")
    port = up.free_port()
    folder = up.OUT_DIR / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)]
    proc = up.spawn(cmd, up.OUT_DIR / "redis.log")
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def keyrelay(tag: str, nginx_port: int, extra: dict[str, str]) -> tuple[run.Target, object]:
    """A KeyRelay server whose requests use a client key with (generous) limits."""
    conf, _ = run.gunicorn_conf()
    env, master = run.keyrelay_env(tag)
    port = up.free_port()
    env = run.server_env(run.Server("gevent", 2), port, {**env, **extra})
    proc = run.start_gunicorn(conf, "app:create_app()", env, port, f"redis-ab-{tag}")
    target = run.Target(tag, f"http://127.0.0.1:{port}", {"chat": "/v1/chat/completions"})
    run.register_keys(target.base, master, nginx_port)
    limits = {"name": "bench", "profile": "bench", "rpm_limit": 10**9, "tpm_limit": 10**9}
    status, body = run.api("POST", f"{target.base}/api/admin/client-keys", master, limits)
    assert status == 201, body
    target.auth = body["key"]
    target.profiles = {"chat": "bench", "stream": "bench-stream"}
    return target, proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args(argv)
    up.OUT_DIR.mkdir(parents=True, exist_ok=True)
    p50 = {"files": [], "redis": []}
    rps = {"files": [], "redis": []}
    procs = []
    try:
        _, nginx_port = up.start_nginx()
        redis_proc, url = start_redis()
        procs.append(redis_proc)
        files, proc = keyrelay("files", nginx_port, {})
        procs.append(proc)
        shared, proc = keyrelay("redis", nginx_port, {"KEYRELAY_REDIS_URL": url})
        procs.append(proc)
        for target in (files, shared):
            run.smoke(target, "chat")
            run.run_wrk(target, "chat", 64, 2, 2)  # warm-up
        for number in range(args.rounds):
            pair = (files, shared) if number % 2 == 0 else (shared, files)
            for target in pair:
                p50[target.name].append(
                    run.run_wrk(target, "chat", 1, 1, args.seconds)["p50_us"] / 1e3
                )
                rps[target.name].append(run.run_wrk(target, "chat", 64, 2, args.seconds)["rps"])
            print(
                f"  round {number + 1}: p50 files {p50['files'][-1]:.3f} ms, redis "
                f"{p50['redis'][-1]:.3f} ms; rps64 files {rps['files'][-1]:.0f}, redis "
                f"{rps['redis'][-1]:.0f}",
                flush=True,
            )
        served = shared.served["chat"]
        stats = subprocess.run(
            ["redis-cli", "-u", url, "info", "commandstats"], capture_output=True, text=True
        ).stdout
        print(f"\nRedis commands for {served} requests served with Redis:\n{stats}")
    finally:
        for proc in procs:
            up.stop(proc)
        up.stop_all()
    added = [r - f for f, r in zip(p50["files"], p50["redis"], strict=True)]
    print()
    print("| limits | p50, 1 client (median) | req/s, 64 clients (median) |")
    print("|---|---|---|")
    for name in ("files", "redis"):
        print(
            f"| {name} | {statistics.median(p50[name]):.3f} ms "
            f"| {statistics.median(rps[name]):.0f} |"
        )
    verdict = "PASS" if statistics.median(added) <= 0.3 else "FAIL"
    print(f"\nadded p50 (median of rounds): {statistics.median(added):.3f} ms ({verdict}, ≤ 0.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

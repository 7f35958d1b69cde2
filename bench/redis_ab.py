"""Issue 14's benchmark: one KeyRelay on SQLite + files, on SQLite + Redis, and on
PostgreSQL + Redis (both servers local). Target: Redis-shared limits cost ≤ 0.3 ms p50.

Three servers side by side (gevent x2 each, the repo's gunicorn.conf.py), each with its own
database; `sqlite+redis` and `pg+redis` share one local redis-server (separate namespaces:
their databases have different ids), `pg+redis` uses a throwaway PostgreSQL cluster
(tests/pg.py). Requests carry a client key with RPM and TPM limits too high to refuse
anything, so every request is admitted and settled by the limiter under test, and booked
by the journal writer into that server's database. The chat mode against nginx.

Such a roomy window is what Redis grants requests from (redis_limiter.py: a process
admits up to 32 with no round trip for 0.1 s), so `sqlite+redis` and `pg+redis` mostly
admit locally. `sqlite+redis per request` is the same server with a key that also has a
parallel limit (never reached), which is never granted: every request takes its round
trip to Redis (sent when the request is parsed, read just before the upstream call).

A noisy VM drifts within minutes, so the servers are measured in alternation, their order
rotated each round, and each figure is the median of the rounds:
- p50 at 1 client (wrk -c1), and what Redis adds to it (`sqlite+redis` − `files`: the
  limits alone; `pg+redis` − `files`: the whole multi-host setup);
- req/s at 64 clients;
- CPU per request at 64 clients: the CPU time the gunicorn workers, redis-server and
  PostgreSQL spent, over the requests served (steadier than latency on a shared machine).

    .venv/bin/python bench/redis_ab.py                 # 7 rounds of 3 s
    .venv/bin/python bench/redis_ab.py --unix-socket   # Redis over a unix socket
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import run
import upstream as up

REPO = Path(__file__).resolve().parent.parent
TARGET_MS = 0.3


def start_redis(unix_socket: bool) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server") or up.ensure_tool("redis-server", "redis-server")
    folder = up.OUT_DIR / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--save", "", "--appendonly", "no", "--dir", str(folder)]
    if unix_socket:
        sock = folder / "redis.sock"
        cmd += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        url = f"unix://{sock}?db=0"
    else:
        port = up.free_port()
        cmd += ["--port", str(port), "--bind", "127.0.0.1"]
        url = f"redis://127.0.0.1:{port}/0"
    proc = up.spawn(cmd, up.OUT_DIR / "redis.log")
    time.sleep(0.5)
    return proc, url


def start_postgres():
    sys.path.insert(0, str(REPO))
    from tests.pg import PostgresServer

    server = PostgresServer().start()
    return server, server.create_database()


def keyrelay(tag: str, nginx_port: int, extra: dict[str, str]):
    """A KeyRelay server whose requests use a client key with (generous) limits; returns
    the target, the server process and its master key."""
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
    return target, proc, master


def per_request_key(target: run.Target, master: str, tag: str) -> run.Target:
    """The same server with a client key whose window never grants (a parallel limit, never
    reached, besides the same RPM and TPM): every request asks Redis, one round trip."""
    limits = {"name": "bench-per-request", "profile": "bench", "rpm_limit": 10**9}
    limits |= {"tpm_limit": 10**9, "max_parallel_requests": 10**6}
    status, body = run.api("POST", f"{target.base}/api/admin/client-keys", master, limits)
    assert status == 201, body
    other = copy.copy(target)
    other.name, other.auth = tag, body["key"]
    other.served = {"chat": 0, "stream": 0}
    return other


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, user + system clock ticks) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds spent so far by the processes under `roots` (themselves included)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _stat(int(entry))) is not None:
            stats[int(entry)] = found
    wanted, total = set(roots), 0
    changed = True
    while changed:  # descendants, whatever their depth
        changed = False
        for pid, (parent, _) in stats.items():
            if parent in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    for pid in wanted:
        if pid in stats:
            total += stats[pid][1]
    return total / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--unix-socket", action="store_true", help="Redis over a unix socket")
    ap.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL + Redis")
    args = ap.parse_args(argv)
    up.OUT_DIR.mkdir(parents=True, exist_ok=True)
    names = ["files", "sqlite+redis", "sqlite+redis per request"]
    names += [] if args.no_postgres else ["pg+redis"]
    p50 = {name: [] for name in names}
    rps = {name: [] for name in names}
    cpu = {name: [] for name in names}
    procs, pg = [], None
    try:
        _, nginx_port = up.start_nginx()
        redis_proc, url = start_redis(args.unix_socket)
        procs.append(redis_proc)
        targets, roots = {}, {}
        targets["files"], proc, _ = keyrelay("files", nginx_port, {})
        procs.append(proc)
        roots["files"] = [proc.pid]
        shared = {"KEYRELAY_REDIS_URL": url}
        targets["sqlite+redis"], proc, master = keyrelay("sqlite-redis", nginx_port, shared)
        procs.append(proc)
        roots["sqlite+redis"] = [proc.pid, redis_proc.pid]
        name = "sqlite+redis per request"
        targets[name] = per_request_key(targets["sqlite+redis"], master, name)
        roots[name] = roots["sqlite+redis"]
        if not args.no_postgres:
            pg, database = start_postgres()
            extra = {**shared, "KEYRELAY_DATABASE_URL": database}
            targets["pg+redis"], proc, _ = keyrelay("pg-redis", nginx_port, extra)
            procs.append(proc)
            postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
            roots["pg+redis"] = [proc.pid, redis_proc.pid, postmaster]
        for target in targets.values():
            run.smoke(target, "chat")
            run.run_wrk(target, "chat", 64, 2, 2)  # warm-up
        for number in range(args.rounds):
            order = names[number % len(names) :] + names[: number % len(names)]
            for name in order:
                target = targets[name]
                p50[name].append(run.run_wrk(target, "chat", 1, 1, args.seconds)["p50_us"] / 1e3)
                before = tree_cpu(roots[name])
                result = run.run_wrk(target, "chat", 64, 2, args.seconds)
                spent = tree_cpu(roots[name]) - before
                rps[name].append(result["rps"])
                cpu[name].append(spent / max(1, result["ok"]) * 1e6)
            print(
                f"  round {number + 1}: "
                + "; ".join(
                    f"{n} p50 {p50[n][-1]:.3f} ms, {rps[n][-1]:.0f} req/s, {cpu[n][-1]:.0f} µs CPU"
                    for n in names
                ),
                flush=True,
            )
        stats = subprocess.run(
            ["redis-cli", "-u", url, "info", "commandstats"], capture_output=True, text=True
        ).stdout
        served = sum(targets[n].served["chat"] for n in names if n != "files")
        print(f"\nRedis commands for {served} requests served with Redis:\n{stats}")
    finally:
        for proc in procs:
            up.stop(proc)
        up.stop_all()
        if pg is not None:
            pg.stop()
    print()
    print("\n".join(run.machine()))
    print(
        f"Redis over {'a unix socket' if args.unix_socket else 'TCP loopback'}; "
        f"{args.rounds} rounds of {args.seconds} s, medians of rounds.\n"
    )
    print("| setup | p50, 1 client | added p50 | req/s, 64 clients | CPU per request |")
    print("|---|---|---|---|---|")
    for name in names:
        added = [x - f for f, x in zip(p50["files"], p50[name], strict=True)]
        shown = "—" if name == "files" else f"{statistics.median(added):+.3f} ms"
        print(
            f"| {name} | {statistics.median(p50[name]):.3f} ms | {shown} "
            f"| {statistics.median(rps[name]):.0f} | {statistics.median(cpu[name]):.0f} µs |"
        )
    print()
    for name in names[1:]:
        added = statistics.median(x - f for f, x in zip(p50["files"], p50[name], strict=True))
        verdict = "PASS" if added <= TARGET_MS else "FAIL"
        print(f"{name}: adds {added:.3f} ms p50 to files ({verdict}, target ≤ {TARGET_MS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""KeyRelay benchmark: latency added and throughput vs. the Python floor and direct calls.

Run from the repo root: `.venv/bin/python bench/run.py [--quick] [--write]`.
See bench/README.md for what is measured and how to read the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import upstream as up
from results import write_section

VENV_BIN = Path(sys.executable).parent
ROOT_CONF = up.REPO_DIR / "gunicorn.conf.py"
FALLBACK_CONF = up.OUT_DIR / "gunicorn.fallback.conf.py"
LUA = up.BENCH_DIR / "chat.lua"
MODES = ("chat", "stream")
LOADS = (16, 64)
TOKENS = {
    "chat": up.CHAT_USAGE["total_tokens"],
    "stream": up.STREAM_USAGE["total_tokens"],
}
FALLBACK_TEXT = '''"""Bench stand-in for the repo's gunicorn.conf.py while it does not exist."""
import os

bind = os.environ.get("KEYRELAY_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("KEYRELAY_WORKERS", "2"))
worker_class = os.environ.get("KEYRELAY_WORKER_CLASS", "gevent")
threads = int(os.environ.get("KEYRELAY_THREADS", "16"))
'''
SHOWN_SETTINGS = ("workers", "worker_class", "threads", "worker_connections", "keepalive")


@dataclass
class Target:
    """One thing to load: where to send requests and how to label them."""

    name: str
    base: str
    paths: dict[str, str]
    auth: str = ""
    profiles: dict[str, str] = field(default_factory=lambda: {"chat": "", "stream": ""})
    models: dict[str, str] = field(default_factory=lambda: {"chat": up.MODEL, "stream": up.MODEL})
    config: str = "-"
    served: dict[str, int] = field(default_factory=lambda: {"chat": 0, "stream": 0})
    results: dict[str, dict] = field(default_factory=dict)
    note: str = ""


@dataclass
class Server:
    """A gunicorn configuration under test: class and workers (None = conf default)."""

    worker_class: str | None
    workers: int | None
    threads: int = 0
    label: str = ""
    settings: dict[str, str] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up")
    ap.add_argument("--litellm", action="store_true", help="also run LiteLLM Proxy")
    ap.add_argument("--worker-class", default="", help="comma list, e.g. gevent,gthread")
    ap.add_argument("--workers", default="", help="comma list of worker counts, e.g. 2,4")
    ap.add_argument("--threads", type=int, default=0, help="gthread threads (GUNICORN_CMD_ARGS)")
    ap.add_argument("--gunicorn-conf", default="", help="config file (default: the repo's)")
    ap.add_argument("--write", action="store_true", help="write bench/RESULTS.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration = 3
    args.warmup = 1 if args.duration <= 5 else 2
    return args


def servers_from(args: argparse.Namespace) -> list[Server]:
    """Return the gunicorn configurations to measure (the matrix of both flags)."""
    classes = [c.strip() for c in args.worker_class.split(",") if c.strip()] or [None]
    counts = [int(n) for n in args.workers.split(",") if n.strip()] or [None]
    return [Server(c, n, args.threads) for c in classes for n in counts]


def gunicorn_conf(override: str = "") -> tuple[Path, bool]:
    """Return the gunicorn config to use and whether it is the bench's stand-in."""
    if override:
        return Path(override).resolve(), False
    if ROOT_CONF.exists():
        return ROOT_CONF, False
    FALLBACK_CONF.parent.mkdir(parents=True, exist_ok=True)
    FALLBACK_CONF.write_text(FALLBACK_TEXT)
    return FALLBACK_CONF, True


def server_env(server: Server, port: int, extra: dict[str, str]) -> dict[str, str]:
    """Return the environment for a gunicorn child: our KEYRELAY_* settings win."""
    env = dict(os.environ)
    env.update(extra)
    env["KEYRELAY_BIND"] = f"127.0.0.1:{port}"
    if server.worker_class:
        env["KEYRELAY_WORKER_CLASS"] = server.worker_class
    if server.workers:
        env["KEYRELAY_WORKERS"] = str(server.workers)
    if server.threads:
        env["GUNICORN_CMD_ARGS"] = f"--threads {server.threads}"
    return env


def effective_settings(conf: Path, app: str, env: dict[str, str]) -> dict[str, str]:
    """Return gunicorn's fully resolved settings for conf + env (via --print-config)."""
    cmd = [str(VENV_BIN / "gunicorn"), "-c", str(conf), "--print-config", app]
    env = dict(env, PYTHONPATH=str(up.BENCH_DIR))  # --check-config ignores --pythonpath
    done = subprocess.run(cmd, cwd=up.REPO_DIR, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["?"]
        raise RuntimeError(f"gunicorn rejects {conf.name}: {lines[-1][:200]}")
    out = done.stdout
    found = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in SHOWN_SETTINGS:
            found[key.strip()] = value.strip()
    return found


def describe(settings: dict[str, str]) -> str:
    """Return a short label like 'gevent x2' or 'gthread x2 (16 thr)'."""
    label = f"{settings.get('worker_class', '?')} x{settings.get('workers', '?')}"
    if settings.get("worker_class") == "gthread":
        label += f" ({settings.get('threads', '?')} thr)"
    return label


def start_gunicorn(conf: Path, app: str, env: dict[str, str], port: int, tag: str):
    """Start gunicorn with the production config and wait for /healthz."""
    cmd = [str(VENV_BIN / "gunicorn"), "-c", str(conf), app]
    if app.startswith("floor_"):
        cmd[1:1] = ["--pythonpath", str(up.BENCH_DIR)]
    proc = up.spawn(cmd, up.OUT_DIR / f"{tag}.log", env=env)
    up.wait_ready(f"http://127.0.0.1:{port}/healthz", proc, timeout=60)
    return proc


def run_wrk(target: Target, mode: str, conns: int, threads: int, seconds: int) -> dict:
    """Run wrk once against target and return the JSON from chat.lua's done()."""
    env = dict(os.environ)
    env.update(
        BENCH_AUTH=target.auth,
        BENCH_PROFILE=target.profiles[mode],
        BENCH_STREAM="1" if mode == "stream" else "0",
        BENCH_MODEL=target.models[mode],
    )
    url = target.base + target.paths[mode]
    cmd = [up.ensure_tool("wrk", "wrk"), f"-t{threads}", f"-c{conns}", f"-d{seconds}s"]
    cmd += ["--timeout", "10s", "--latency", "-s", str(LUA), url]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^BENCH_JSON (\{.*\})$", proc.stdout, re.M)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    result = json.loads(match.group(1))
    result["ok"] = result["requests"] - result["err_status"]
    result["rps"] = result["ok"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(v for k, v in result.items() if k.startswith("err_"))
    target.served[mode] += result["ok"]
    return result


def smoke(target: Target, mode: str) -> None:
    """Send one request and check the answer looks like the fixed upstream body."""
    body = {"model": target.models[mode], "messages": [{"role": "user", "content": "hi"}]}
    if mode == "stream":
        body["stream"] = True
    headers = {"Content-Type": "application/json"}
    if target.auth:
        headers["Authorization"] = f"Bearer {target.auth}"
    if target.profiles[mode]:
        headers["X-Profile"] = target.profiles[mode]
    req = urllib.request.Request(
        target.base + target.paths[mode], data=json.dumps(body).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"{target.name} {mode}: HTTP {err.code} {err.read()[:300]!r}") from err
    want = "[DONE]" if mode == "stream" else '"total_tokens"'
    if want not in text:
        raise RuntimeError(f"{target.name} {mode}: unexpected body {text[:300]!r}")
    target.served[mode] += 1


def measure(target: Target, args: argparse.Namespace, modes: tuple = MODES) -> None:
    """Warm up, then measure 1-client latency and 16/64-client throughput per mode."""
    for mode in modes:
        smoke(target, mode)
        run_wrk(target, mode, 64, 2, args.warmup)
        res = {"lat": run_wrk(target, mode, 1, 1, args.duration)}
        for conns in LOADS:
            res[conns] = run_wrk(target, mode, conns, 2, args.duration)
        target.results[mode] = res
        lat = res["lat"]
        print(
            f"  {target.name:<9} {target.config:<20} {mode:<6} p50 {lat['p50_us'] / 1e3:.3f} ms"
            f"  p99 {lat['p99_us'] / 1e3:.3f} ms  rps16 {res[16]['rps']:.0f}"
            f"  rps64 {res[64]['rps']:.0f}",
            flush=True,
        )


def api(method: str, url: str, token: str, payload: dict | None = None) -> tuple[int, object]:
    """Call a KeyRelay admin JSON endpoint and return (status, decoded body)."""
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


def keyrelay_problem(conf: Path, env: dict[str, str]) -> str:
    """Return why KeyRelay cannot run yet, or '' when app.create_app imports."""
    if not (up.REPO_DIR / "app.py").exists():
        return "no app.py in the repo yet"
    if not conf.exists() or conf == FALLBACK_CONF:
        return "no gunicorn.conf.py in the repo yet"
    check = subprocess.run(
        [sys.executable, "-c", "from app import create_app; create_app"],
        cwd=up.REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check.returncode != 0:
        lines = (check.stderr or check.stdout).strip().splitlines() or ["?"]
        return f"create_app import failed: {lines[-1][:160]}"
    return ""


def keyrelay_env(tag: str) -> tuple[dict[str, str], str]:
    """Return a fresh KeyRelay environment (new sqlite db, keys) and its master key."""
    from cryptography.fernet import Fernet

    tmp = up.OUT_DIR / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / f"bench-{tag}.db"
    for leftover in tmp.glob(f"bench-{tag}.db*"):
        leftover.unlink()
    shutil.rmtree(tmp / f"instance-{tag}", ignore_errors=True)
    master = "kr-bench-" + secrets.token_urlsafe(24)
    env = {
        "KEYRELAY_DATABASE_URL": f"sqlite:///{db}",
        "KEYRELAY_INSTANCE_PATH": str(tmp / f"instance-{tag}"),
        "KEYRELAY_MASTER_KEY": master,
        "KEYRELAY_SECRET_KEY": Fernet.generate_key().decode(),
    }
    return env, master


def register_keys(base: str, master: str, upstream_port: int) -> None:
    """Register the bench and bench-stream provider keys through the admin API."""
    for profile, prefix in (("bench", "/v1"), ("bench-stream", "/stream/v1")):
        status, body = api(
            "POST",
            f"{base}/api/admin/keys",
            master,
            {
                "profile": profile,
                "provider": "openai",
                "name": f"{profile}-1",
                "secret": "sk-bench-0001",
                "base_url": f"http://127.0.0.1:{upstream_port}{prefix}",
                "models": ["*"],
                "daily_token_limit": None,
            },
        )
        if status != 201:
            raise RuntimeError(f"POST /api/admin/keys for {profile}: {status} {body}")


def upstream_requests(port: int) -> int:
    """Return nginx's handled-request counter (stub_status; it counts this request too)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/nginx_status", timeout=5) as resp:
        text = resp.read().decode()
    return int(text.splitlines()[2].split()[2])


def find_total_tokens(data: object) -> int | None:
    """Return the first 'total_tokens' (or 'tokens') number found in a stats JSON."""
    if isinstance(data, dict):
        for key in ("total_tokens", "tokens_total", "tokens"):
            if isinstance(data.get(key), int):
                return data[key]
        for value in data.values():
            found = find_total_tokens(value)
            if found is not None:
                return found
    if isinstance(data, list):
        for value in data:
            found = find_total_tokens(value)
            if found is not None:
                return found
    return None


def counted_tokens(base: str, master: str, profile: str) -> tuple[int | None, object]:
    """Poll /api/admin/stats until the token total is stable; return (total, JSON)."""
    last, body = None, None
    for _ in range(20):
        status, body = api("GET", f"{base}/api/admin/stats?profile={profile}", master)
        total = find_total_tokens(body) if status == 200 else None
        if total is not None and total == last:
            return total, body
        last = total
        time.sleep(0.5)
    return last, body


def accounting(target: Target, base: str, master: str, upstream_counts: dict) -> list[str]:
    """Return P4 lines: KeyRelay's token totals vs. what wrk and nginx saw."""
    lines = []
    for mode, profile in (("chat", "bench"), ("stream", "bench-stream")):
        total, body = counted_tokens(base, master, profile)
        by_wrk = target.served[mode] * TOKENS[mode]
        by_upstream = upstream_counts[mode] * TOKENS[mode]
        ok = total is not None and total in (by_wrk, by_upstream)
        scope = body.get("all_time", {}) if isinstance(body, dict) else {}
        line = (
            f"P4 accounting {target.config} {mode} (profile {profile}): counted {total} tokens"
            f" in {scope.get('requests', '?')} requests, "
            f"wrk-completed {target.served[mode]} x {TOKENS[mode]} = {by_wrk}, "
            f"upstream-served {upstream_counts[mode]} x {TOKENS[mode]} = {by_upstream} "
            f"-> {'PASS equal' if ok else 'FAIL not equal'}"
        )
        if total is None:
            line += f"; stats JSON: {json.dumps(body)[:400]}"
        lines.append(line)
    return lines


def run_keyrelay(server: Server, conf: Path, nginx_port: int, args) -> tuple[Target, list[str]]:
    """Start KeyRelay under gunicorn, register keys, measure, and check accounting."""
    tag = re.sub(r"\W+", "-", server.label)
    extra, master = keyrelay_env(tag)
    port = up.free_port()
    env = server_env(server, port, extra)
    problem = keyrelay_problem(conf, env)
    target = Target(
        "keyrelay", f"http://127.0.0.1:{port}", {m: "/v1/chat/completions" for m in MODES}
    )
    target.config, target.auth = server.label, master
    target.profiles = {"chat": "bench", "stream": "bench-stream"}
    if problem:
        target.note = f"not run: {problem}"
        return target, []
    proc = start_gunicorn(conf, "app:create_app()", env, port, f"keyrelay-{tag}")
    try:
        register_keys(target.base, master, nginx_port)
        counts = {}
        for mode in MODES:
            before = upstream_requests(nginx_port)
            measure(target, args, (mode,))
            time.sleep(1.0)
            counts[mode] = upstream_requests(nginx_port) - before - 1
        return target, accounting(target, target.base, master, counts)
    except Exception as err:  # noqa: BLE001 - keep what was measured, report the rest
        target.note = f"failed: {str(err)[:300]}"
        return target, []
    finally:
        up.stop(proc)


def run_floor(server: Server, conf: Path, nginx_port: int, args) -> Target:
    """Start the floor under the same gunicorn config and measure it."""
    port = up.free_port()
    env = server_env(server, port, {"FLOOR_UPSTREAM": f"http://127.0.0.1:{nginx_port}"})
    target = Target("floor", f"http://127.0.0.1:{port}", direct_paths(), config=server.label)
    tag = re.sub(r"\W+", "-", server.label)
    try:
        proc = start_gunicorn(conf, "floor_app:app", env, port, f"floor-{tag}")
    except RuntimeError as err:
        target.note = f"failed to start: {err}"
        return target
    try:
        measure(target, args)
    except Exception as err:  # noqa: BLE001 - keep what was measured, report the rest
        target.note = f"failed: {str(err)[:300]}"
    finally:
        up.stop(proc)
    return target


def direct_paths() -> dict[str, str]:
    """Return the upstream paths for non-streaming and streaming chat."""
    return {"chat": "/v1/chat/completions", "stream": "/stream/v1/chat/completions"}


LITELLM_VENV = up.OUT_DIR / "litellm-venv"


def install_litellm() -> Path:
    """Install litellm[proxy] into its own venv under bench/out/ and return its CLI."""
    cli = LITELLM_VENV / "bin" / "litellm"
    if cli.exists():
        return cli
    log = up.OUT_DIR / "litellm-install.log"
    steps = [
        [sys.executable, "-m", "venv", str(LITELLM_VENV)],
        [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
    ]
    print("  installing litellm[proxy] into bench/out/litellm-venv ...", flush=True)
    with open(log, "w") as out:
        for cmd in steps:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=900)
            if done.returncode != 0:
                tail = log.read_text().strip().splitlines()[-1:] or ["?"]
                raise RuntimeError(f"{cmd[-1]} failed: {tail[0][:160]}")
    if not cli.exists():
        raise RuntimeError("litellm CLI missing after install")
    return cli


def litellm_config(nginx_port: int, master: str) -> Path:
    """Write LiteLLM's model_list pointing at the fake upstream; return its path."""
    entries = []
    for name, prefix in (("gpt-4o-mini", "/v1"), ("gpt-4o-mini-stream", "/stream/v1")):
        entries.append(
            f"  - model_name: {name}\n"
            "    litellm_params:\n"
            f"      model: openai/{up.MODEL}\n"
            f"      api_base: http://127.0.0.1:{nginx_port}{prefix}\n"
            "      api_key: sk-bench-0001\n"
        )
    text = (
        "model_list:\n" + "".join(entries) + "litellm_settings:\n  telemetry: false\n"
        f"general_settings:\n  master_key: {master}\n"
    )
    path = up.OUT_DIR / "litellm.yaml"
    path.write_text(text)
    return path


def run_litellm(nginx_port: int, workers: int, args) -> Target:
    """Install and run LiteLLM Proxy against the same upstream; never raise."""
    port = up.free_port()
    master = "sk-litellm-" + secrets.token_hex(8)
    target = Target(
        "litellm", f"http://127.0.0.1:{port}", {m: "/v1/chat/completions" for m in MODES}
    )
    target.auth, target.config = master, f"uvicorn x{workers}"
    target.models = {"chat": "gpt-4o-mini", "stream": "gpt-4o-mini-stream"}
    try:
        cli = install_litellm()
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
        cmd = [str(cli), "--config", str(litellm_config(nginx_port, master))]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", str(workers)]
        proc = up.spawn(cmd, up.OUT_DIR / "litellm.log", env=env)
        try:
            up.wait_ready(f"{target.base}/health/liveliness", proc, timeout=180)
            measure(target, args)
        finally:
            up.stop(proc)
    except Exception as err:  # noqa: BLE001 - LiteLLM is optional; report, don't fail
        target.note = f"not run: {type(err).__name__}: {str(err)[:200]}"
        target.results = {}
    return target


def ms(us: float) -> str:
    """Format microseconds as milliseconds."""
    return f"{us / 1e3:.3f}"


def table(targets: list[Target], direct: Target) -> list[str]:
    """Return the Markdown results table."""
    head = (
        "| target | server | mode | p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| req/s @16 | req/s @64 | errors |"
    )
    rows = [head, "|" + "---|" * 10]
    for t in targets:
        if t.note or not t.results:
            rows.append(f"| {t.name} | {t.config} | - | {t.note or 'no result'} |" + " |" * 6)
        for mode in (m for m in MODES if m in t.results):
            res, ref = t.results[mode], direct.results[mode]["lat"]
            lat = res["lat"]
            added = "ref", "ref"
            if t is not direct:
                added = ms(lat["p50_us"] - ref["p50_us"]), ms(lat["p99_us"] - ref["p99_us"])
            errors = sum(res[k]["errors"] for k in ("lat", *LOADS))
            rows.append(
                f"| {t.name} | {t.config} | {mode} | {ms(lat['p50_us'])} | {ms(lat['p99_us'])} "
                f"| {added[0]} | {added[1]} | {res[16]['rps']:.0f} | {res[64]['rps']:.0f} "
                f"| {errors} |"
            )
    return rows


def added(t: Target, direct: Target, mode: str, pct: str) -> float:
    """Return target's added latency (µs) over direct for one mode and percentile."""
    return t.results[mode]["lat"][pct] - direct.results[mode]["lat"][pct]


def verdict(ok: bool) -> str:
    """Return PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def targets_report(targets: list[Target], direct: Target) -> list[str]:
    """Return the P1/P2 PASS/FAIL lines for every KeyRelay configuration."""
    floors = {t.config: t for t in targets if t.name == "floor" and t.results}
    litellm = next((t for t in targets if t.name == "litellm"), None)
    lines = []
    for kr in (t for t in targets if t.name == "keyrelay"):
        floor = floors.get(kr.config)
        if not kr.results or floor is None:
            lines.append(f"P1/P2 {kr.config}: not run ({kr.note or 'no floor result'})")
            continue
        for mode in MODES:
            if mode not in kr.results or mode not in floor.results:
                lines.append(f"P1/P2 {kr.config} {mode}: not measured ({kr.note or floor.note})")
                continue
            a50, f50 = added(kr, direct, mode, "p50_us"), added(floor, direct, mode, "p50_us")
            a99 = added(kr, direct, mode, "p99_us")
            lines.append(
                f"P1 p50 {kr.config} {mode}: KeyRelay +{ms(a50)} ms vs floor +{ms(f50)} ms "
                f"(diff {ms(a50 - f50)} ms, limit 0.5) {verdict(a50 - f50 <= 500)}"
            )
            lines.append(
                f"P1 p99 {kr.config} {mode}: KeyRelay +{ms(a99)} ms (limit < 5) "
                f"{verdict(a99 < 5000)}"
            )
            k64, f64 = kr.results[mode][64]["rps"], floor.results[mode][64]["rps"]
            lines.append(
                f"P2 rps@64 {kr.config} {mode}: KeyRelay {k64:.0f} vs floor {f64:.0f} "
                f"= {100 * k64 / f64:.0f}% (min 80%) {verdict(k64 >= 0.8 * f64)}"
            )
            if litellm and mode in litellm.results:
                l64 = litellm.results[mode][64]["rps"]
                lines.append(
                    f"P2 rps@64 {kr.config} {mode}: KeyRelay / LiteLLM = {k64 / l64:.1f}x "
                    f"(min 10x) {verdict(k64 >= 10 * l64)}"
                )
    if litellm and not litellm.results:
        lines.append(f"P2 vs LiteLLM: {litellm.note}")
    return lines


def _first_line(cmd: list[str]) -> str:
    """Return the first output line of cmd (stdout or stderr), or '?'."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


def machine() -> list[str]:
    """Return lines describing the machine and tool versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    return [
        f"- CPUs (nproc): {len(os.sched_getaffinity(0))}, model: {cpu.group(1) if cpu else '?'}",
        f"- memory: {int(mem.group(1)) / 2**20:.1f} GiB" if mem else "- memory: ?",
        f"- kernel: {platform.release()}; Python {platform.python_version()}",
        f"- {_first_line([str(VENV_BIN / 'gunicorn'), '--version'])}; "
        f"{_first_line([up.ensure_tool('nginx', 'nginx'), '-v'])}; "
        f"{_first_line(['wrk', '-v'])}",
    ]


def shown_path(path: Path) -> str:
    """Return path relative to the repo when it is inside it."""
    try:
        return str(path.relative_to(up.REPO_DIR))
    except ValueError:
        return str(path)


def render(targets, direct, servers, conf, fallback, acct, args) -> str:
    """Return the full Markdown report."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    conf_note = " (bench stand-in: repo has no gunicorn.conf.py yet)" if fallback else ""
    lines = [
        "# KeyRelay benchmark results",
        "",
        f"Date: {now}. Command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`.",
        f"Runs: {args.duration} s each after a {args.warmup} s warm-up; latency with 1 client "
        "(wrk -t1 -c1), throughput with wrk -t2 at 16 and 64 connections.",
        "",
        "## Machine",
        *machine(),
        "- load average before the run (1/5/15 min): "
        + ", ".join(f"{x:.2f}" for x in args.load)
        + " (anything else busy on the machine skews every figure)",
        f"- gunicorn config: `{shown_path(conf)}`{conf_note}",
        *(f"  - {s.label}: {json.dumps(s.settings)}" for s in servers),
        "",
        "## Figures",
        "",
        *table(targets, direct),
        "",
        "Added = target minus direct (nginx) at the same percentile, 1 client.",
        "",
        "## Targets",
        "",
        *(f"- {line}" for line in targets_report(targets, direct) + acct),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every target once and print (and optionally write) the report."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    up.OUT_DIR.mkdir(parents=True, exist_ok=True)
    servers = servers_from(args)
    args.load = os.getloadavg()
    try:
        up.ensure_tool("wrk", "wrk")
        _, nginx_port = up.start_nginx()
        conf, fallback = gunicorn_conf(args.gunicorn_conf)
        direct = Target("direct", f"http://127.0.0.1:{nginx_port}", direct_paths(), config="nginx")
        measure(direct, args)
        targets, acct = [direct], []
        for server in servers:
            try:
                server.settings = effective_settings(
                    conf, "floor_app:app", server_env(server, 0, {})
                )
            except RuntimeError as err:
                server.label = f"{server.worker_class or 'default'} x{server.workers or '?'}"
                for name in ("floor", "keyrelay"):
                    targets.append(
                        Target(name, "", {}, config=server.label, note=f"not run: {err}")
                    )
                continue
            server.label = describe(server.settings)
            try:
                targets.append(run_floor(server, conf, nginx_port, args))
            except Exception as err:  # noqa: BLE001 - report the failure, keep the rest
                targets.append(Target("floor", "", {}, config=server.label, note=f"failed: {err}"))
            try:
                kr, lines = run_keyrelay(server, conf, nginx_port, args)
            except Exception as err:  # noqa: BLE001 - report the failure, keep the rest
                kr = Target("keyrelay", "", {}, config=server.label, note=f"failed: {err}")
                lines = []
            targets.append(kr)
            acct += lines
        if args.litellm:
            workers = int(servers[0].settings.get("workers", "2"))
            targets.append(run_litellm(nginx_port, workers, args))
        report = render(targets, direct, servers, conf, fallback, acct, args)
    finally:
        up.stop_all()
    print(report)
    if args.write:
        write_section("proxy", report)
        print(f"wrote {up.BENCH_DIR / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

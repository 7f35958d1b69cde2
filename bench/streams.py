"""Open streams: how many a default instance holds, the worker memory each costs, and a
new stream's time to first byte while they are held.

A slow upstream (asyncio, in its own process) answers `/v1/chat/completions` with an
OpenAI chat stream that sends its role event at once, then one content event a second
until the bench releases it (at least `--hold` seconds after the first was opened, and
only once all are open), then its finish, usage and `data: [DONE]`; under `/stream/` it
answers the whole short stream at once (the probe). The client (asyncio raw sockets, this
process) opens `--streams` streams through the server under test and checks that every
one ends with `[DONE]`. Measured for the server as `gunicorn.conf.py` runs it by default
(no setting changed) and for the Python floor (`bench/floor_app.py`, urllib3, the same
gunicorn config), one at a time:

- held: the most streams open at once (first byte seen, `[DONE]` not yet), and finished;
- memory: the workers' summed RSS (/proc) idle and with the streams held: KB per stream;
- time to first byte of a new probe stream (a new connection, to the first response
  byte), idle and with the streams held, each probe paired with one straight to the
  upstream; a separate process sends the probes.

    .venv/bin/python bench/streams.py                     # 10,000 streams of 30 s
    .venv/bin/python bench/streams.py --streams 2000 --hold 20 --targets keyrelay
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import run
import upstream as up

ROLE = up._chunk({"role": "assistant", "content": ""}).encode()
PIECE = up._chunk({"content": " tick"}).encode()
END = (
    up._chunk({}, finish="stop") + up._chunk(None, usage=up.STREAM_USAGE) + "data: [DONE]\n\n"
).encode()
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
DONE = b"data: [DONE]"
MODELS = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(up.models_body()),
    up.models_body().encode(),
)


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def raise_file_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; return it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- the slow upstream (its own process) ---------------------------------------------


class _Held:
    """The streams held now. One ticker sends each its event a second (timers per stream
    would make the upstream the bottleneck); they end once the bench says so
    (`GET /release`), not on a timer: on a busy machine opening them all may take longer
    than any fixed hold."""

    writers: set = set()
    released: asyncio.Event | None = None

    @classmethod
    def event(cls) -> asyncio.Event:
        if cls.released is None:
            cls.released = asyncio.Event()
        return cls.released

    @classmethod
    async def tick(cls, interval: float) -> None:
        """Every `interval`, an event to each held stream, in ten slices spread over it."""
        while True:
            writers = list(cls.writers)
            step = max(1, len(writers) // 10)
            for start in range(0, max(len(writers), 1), step):
                for writer in writers[start : start + step]:
                    if not writer.is_closing():
                        writer.write(_chunked(PIECE))
                await asyncio.sleep(interval / 10)


async def _upstream_connection(reader, writer) -> None:
    """Answer requests on one keep-alive connection: slow streams, or the quick probe."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            line = head.split(b"\r\n", 1)[0]
            if line.startswith(b"GET /release"):  # end the held streams; new ones are held
                _Held.event().set()
                _Held.released = None
                writer.write(MODELS)
                continue
            if line.startswith(b"GET "):  # the key check's model list
                writer.write(MODELS)
                continue
            writer.write(SSE_HEAD + _chunked(ROLE))
            if b" /stream/" not in line:
                released = _Held.event()
                _Held.writers.add(writer)
                try:
                    await released.wait()
                finally:
                    _Held.writers.discard(writer)
            writer.write(_chunked(PIECE + END) + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


def release(port: int) -> None:
    """Tell the slow upstream to end every stream it holds."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /release HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(4096)


async def _serve_upstream(port: int, interval: float) -> None:
    server = await asyncio.start_server(_upstream_connection, "127.0.0.1", port, backlog=4096)
    ticker = asyncio.create_task(_Held.tick(interval))
    async with server:
        await server.serve_forever()
    ticker.cancel()


def start_upstream(interval: float):
    """Start the slow upstream in its own process; return (process, port)."""
    port = up.free_port()
    cmd = [sys.executable, __file__, "--serve-upstream", str(port), "--interval", str(interval)]
    proc = up.spawn(cmd, up.OUT_DIR / "streams-upstream.log")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise RuntimeError("slow upstream did not start")


# --- the client --------------------------------------------------------------------


def request_bytes(path: str, auth: str, profile: str) -> bytes:
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}'
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if auth:
        head.append(f"Authorization: Bearer {auth}")
    if profile:
        head.append(f"X-Profile: {profile}")
    head += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Tally:
    """Streams opened, open now (and the most at once), finished, failed."""

    def __init__(self) -> None:
        self.open = self.most = self.finished = self.started = 0
        self.failed: dict[str, int] = {}

    def fail(self, why: str) -> None:
        self.failed[why] = self.failed.get(why, 0) + 1


async def _one_stream(port: int, request: bytes, tally: Tally, gate: asyncio.Semaphore) -> None:
    opened = False
    try:
        async with gate:  # at most so many connecting (before their first byte) at once
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            data = await reader.read(65536)
            if not data.startswith(b"HTTP/1.1 200"):
                tally.fail(data[:12].decode(errors="replace") or "closed")
                writer.close()
                return
        opened = True
        tally.open += 1
        tally.most = max(tally.most, tally.open)
        tail = data
        while DONE not in tail:
            data = await reader.read(65536)
            if not data:
                tally.fail("ended without [DONE]")
                break
            tail = tail[-16:] + data
        else:
            tally.finished += 1
        writer.close()
    except OSError as exc:
        tally.fail(type(exc).__name__)
    finally:
        if opened:
            tally.open -= 1


async def _hold(
    port: int, request: bytes, count: int, tally: Tally, at_peak, upstream: int, hold: float
):
    """Open `count` streams; once all are open (or the rest failed), call `at_peak` in a
    thread (it measures); after `hold` seconds at least, end them and wait for each."""
    gate = asyncio.Semaphore(256)
    tasks = [asyncio.create_task(_one_stream(port, request, tally, gate)) for _ in range(count)]
    started = time.monotonic()
    while tally.open + tally.finished + sum(tally.failed.values()) < count:
        await asyncio.sleep(0.2)
    ramp = time.monotonic() - started
    measured = await asyncio.to_thread(at_peak, tally.open)
    await asyncio.sleep(max(0.0, started + hold - time.monotonic()))
    await asyncio.to_thread(release, upstream)
    await asyncio.gather(*tasks)
    return ramp, measured


def probe_times(
    host_port: int, path: str, auth: str, profile: str, direct: tuple[int, str], count: int
):
    """Time to first byte (ms) of `count` new streams, each paired with a direct one."""
    ours, straight = [], []
    for _ in range(count):
        ours.append(_ttfb(host_port, request_bytes(path, auth, profile)))
        straight.append(_ttfb(direct[0], request_bytes(direct[1], "", "")))
    return ours, straight


def _ttfb(port: int, request: bytes) -> float:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        first = sock.recv(65536)
        elapsed = (time.perf_counter() - started) * 1000
        if not first.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"probe: {first[:200]!r}")
        data = first
        while DONE not in data:
            more = sock.recv(65536)
            if not more:
                raise RuntimeError("probe stream ended without [DONE]")
            data = data[-16:] + more
    return elapsed


def probe(target: run.Target, upstream_port: int, count: int) -> dict:
    """Run the probes in a separate process (the client's loop stays out of its way)."""
    spec = {
        "port": int(target.base.rsplit(":", 1)[1]),
        "path": target.paths["stream"],
        "auth": target.auth,
        "profile": target.profiles["stream"],
        "direct": [upstream_port, "/stream/v1/chat/completions"],
        "count": count,
    }
    done = subprocess.run(
        [sys.executable, __file__, "--probe", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
    )
    ours, straight = json.loads(done.stdout)
    return {
        "p50": statistics.median(ours),
        "direct_p50": statistics.median(straight),
        "added_p50": statistics.median(a - b for a, b in zip(ours, straight, strict=True)),
        "p90": statistics.quantiles(ours, n=10)[-1],
    }


# --- memory ------------------------------------------------------------------------


def workers_of(master: int) -> list[int]:
    """The gunicorn master's worker processes."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == master:
            pids.append(int(entry))
    return pids


def rss_kb(pids: list[int]) -> int:
    """The summed resident set (KB) of the processes."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


# --- the run -----------------------------------------------------------------------


def start_target(name: str, upstream_port: int, conf_path: str = ""):
    """Start the floor or KeyRelay under gunicorn.conf.py's defaults; return (target, proc)."""
    conf, _ = run.gunicorn_conf(conf_path)
    server = run.Server(None, None)  # the config's own worker class and count
    port = up.free_port()
    if name == "floor":
        env = run.server_env(server, port, {"FLOOR_UPSTREAM": f"http://127.0.0.1:{upstream_port}"})
        proc = run.start_gunicorn(conf, "floor_app:app", env, port, "streams-floor")
        target = run.Target("floor", f"http://127.0.0.1:{port}", run.direct_paths())
        target.paths = {"chat": "/v1/chat/completions", "stream": "/stream/v1/chat/completions"}
        return target, proc, {"held": "/v1/chat/completions", "profile": ""}
    extra, master = run.keyrelay_env("streams")
    env = run.server_env(server, port, extra)
    proc = run.start_gunicorn(conf, "app:create_app()", env, port, "streams-keyrelay")
    target = run.Target("keyrelay", f"http://127.0.0.1:{port}", {"stream": "/v1/chat/completions"})
    target.auth, target.profiles = master, {"stream": "probe", "chat": ""}
    for profile, prefix in (("probe", "/stream/v1"), ("slow", "/v1")):
        status, body = run.api(
            "POST",
            f"{target.base}/api/admin/keys",
            master,
            {
                "profile": profile,
                "provider": "openai",
                "name": profile,
                "secret": "sk-bench-0001",
                "base_url": f"http://127.0.0.1:{upstream_port}{prefix}",
                "models": ["*"],
            },
        )
        if status != 201:
            raise RuntimeError(f"POST /api/admin/keys: {status} {body}")
    return target, proc, {"held": "/v1/chat/completions", "profile": "slow"}


def _snapshots(args, tag: str, workers: int) -> None:
    """With `--snapshots DIR` (and a --conf whose workers dump tracemalloc snapshots when
    DIR/<tag>.req appears): ask for one and wait until every worker wrote it."""
    if not args.snapshots:
        return
    folder = Path(args.snapshots)
    (folder / f"{tag}.req").touch()
    while len(list(folder.glob(f"{tag}-*.snap"))) < workers:
        time.sleep(0.5)
    (folder / f"{tag}.req").unlink()


def measure_target(name: str, upstream_port: int, args) -> dict:
    target, proc, held = start_target(name, upstream_port, args.conf)
    try:
        probe(target, upstream_port, 50)  # warm-up: imports, pools, caches
        workers = workers_of(proc.pid)
        out = {"workers": len(workers), "rss_idle_kb": rss_kb(workers)}
        out["idle"] = probe(target, upstream_port, args.probes)
        _snapshots(args, "idle", len(workers))
        tally = Tally()
        port = int(target.base.rsplit(":", 1)[1])
        request = request_bytes(held["held"], target.auth, held["profile"])

        def at_peak(open_now: int) -> dict:
            peak = {"open": open_now, "rss_kb": rss_kb(workers)}
            _snapshots(args, "peak", len(workers))
            peak["probe"] = probe(target, upstream_port, args.probes)
            return peak

        started = time.monotonic()
        ramp, peak = asyncio.run(
            _hold(port, request, args.streams, tally, at_peak, upstream_port, args.hold)
        )
        out.update(
            ramp_s=ramp,
            total_s=time.monotonic() - started,
            peak=peak,
            most=tally.most,
            finished=tally.finished,
            failed=tally.failed,
        )
        out["kb_per_stream"] = (peak["rss_kb"] - out["rss_idle_kb"]) / max(peak["open"], 1)
        return out
    finally:
        up.stop(proc)


def report(results: dict, args) -> list[str]:
    lines = [
        f"{args.streams} streams held ≥ {args.hold:.0f} s (an event every {args.interval:.0f} s), "
        f"gunicorn.conf.py defaults, {args.probes} probes each way",
        "",
        "| target | workers | held at once | finished | failed | ramp s | RSS idle MB "
        "| RSS held MB | KB/stream | TTFB idle ms (direct) | TTFB held ms (direct) "
        "| added idle / held ms |",
        "|" + "---|" * 12,
    ]
    for name, res in results.items():
        idle, held = res["idle"], res["peak"]["probe"]
        lines.append(
            f"| {name} | {res['workers']} | {res['peak']['open']} (most {res['most']}) "
            f"| {res['finished']} | {sum(res['failed'].values())} {res['failed'] or ''} "
            f"| {res['ramp_s']:.1f} | {res['rss_idle_kb'] / 1024:.0f} "
            f"| {res['peak']['rss_kb'] / 1024:.0f} | {res['kb_per_stream']:.1f} "
            f"| {idle['p50']:.3f} ({idle['direct_p50']:.3f}) "
            f"| {held['p50']:.3f} ({held['direct_p50']:.3f}) "
            f"| {idle['added_p50']:.3f} / {held['added_p50']:.3f} |"
        )
    if "floor" in results and "keyrelay" in results:
        floor, ours = results["floor"], results["keyrelay"]
        over = ours["peak"]["probe"]["p50"] - floor["idle"]["p50"]
        lines += [
            "",
            f"- KeyRelay's TTFB with {ours['peak']['open']} held: "
            f"{ours['peak']['probe']['p50']:.3f} ms, the idle floor's "
            f"{floor['idle']['p50']:.3f} ms: +{over:.3f} ms (goal ≤ +0.5 ms) "
            f"{'PASS' if over <= 0.5 else 'FAIL'}",
            f"- KB per open stream: {ours['kb_per_stream']:.1f} (goal ≤ 64) "
            f"{'PASS' if ours['kb_per_stream'] <= 64 else 'FAIL'}",
            f"- held and finished: {ours['peak']['open']} / {ours['finished']} of "
            f"{args.streams} {'PASS' if ours['finished'] == args.streams else 'FAIL'}",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--hold", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--targets", default="floor,keyrelay")
    ap.add_argument("--conf", default="", help="another gunicorn config (default: the repo's)")
    ap.add_argument("--snapshots", default="", help=argparse.SUPPRESS)
    ap.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    raise_file_limit()
    if args.serve_upstream:
        asyncio.run(_serve_upstream(args.serve_upstream, args.interval))
        return 0
    if args.probe:
        spec = json.loads(args.probe)
        times = probe_times(
            spec["port"], spec["path"], spec["auth"], spec["profile"], spec["direct"], spec["count"]
        )
        print(json.dumps(times))
        return 0
    up.OUT_DIR.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        _, upstream_port = start_upstream(args.interval)
        for name in args.targets.split(","):
            results[name] = measure_target(name, upstream_port, args)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    finally:
        up.stop_all()
    print("\n".join(report(results, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

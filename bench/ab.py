"""P2 on a noisy machine: KeyRelay and the Python floor measured in alternation.

bench/run.py measures the floor, then KeyRelay, minutes apart; on a shared VM whose speed
drifts by a third within minutes, their ratio is then mostly noise. Here both servers run
side by side (idle while the other is measured) and the 64-client throughput is taken in
rounds, floor and KeyRelay back to back, the order swapped every round. Each round gives a
ratio; the median of the rounds is the figure.

    .venv/bin/python bench/ab.py                 # 7 rounds of 4 s per mode
    .venv/bin/python bench/ab.py --rounds 11 --seconds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys

import run
import upstream as up


def targets(nginx_port: int) -> tuple[run.Target, run.Target, list]:
    """Start the floor and KeyRelay (gevent x2, the repo's gunicorn.conf.py)."""
    conf, _ = run.gunicorn_conf()
    server = run.Server("gevent", 2)
    procs = []
    port = up.free_port()
    env = run.server_env(server, port, {"FLOOR_UPSTREAM": f"http://127.0.0.1:{nginx_port}"})
    procs.append(run.start_gunicorn(conf, "floor_app:app", env, port, "ab-floor"))
    floor = run.Target("floor", f"http://127.0.0.1:{port}", run.direct_paths())
    extra, master = run.keyrelay_env("ab")
    port = up.free_port()
    env = run.server_env(server, port, extra)
    procs.append(run.start_gunicorn(conf, "app:create_app()", env, port, "ab-keyrelay"))
    keyrelay = run.Target(
        "keyrelay", f"http://127.0.0.1:{port}", {m: "/v1/chat/completions" for m in run.MODES}
    )
    keyrelay.auth = master
    keyrelay.profiles = {"chat": "bench", "stream": "bench-stream"}
    run.register_keys(keyrelay.base, master, nginx_port)
    return floor, keyrelay, procs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=4)
    args = ap.parse_args(argv)
    up.OUT_DIR.mkdir(parents=True, exist_ok=True)
    ratios: dict[str, list[float]] = {mode: [] for mode in run.MODES}
    procs = []
    try:
        _, nginx_port = up.start_nginx()
        floor, keyrelay, procs = targets(nginx_port)
        for target in (floor, keyrelay):
            for mode in run.MODES:
                run.smoke(target, mode)
                run.run_wrk(target, mode, 64, 2, 2)  # warm-up
        for number in range(args.rounds):
            for mode in run.MODES:
                pair = (floor, keyrelay) if number % 2 == 0 else (keyrelay, floor)
                rps = {t.name: run.run_wrk(t, mode, 64, 2, args.seconds)["rps"] for t in pair}
                ratios[mode].append(rps["keyrelay"] / rps["floor"])
                print(
                    f"  round {number + 1} {mode:<6} floor {rps['floor']:.0f}  "
                    f"keyrelay {rps['keyrelay']:.0f}  = {100 * ratios[mode][-1]:.0f} %",
                    flush=True,
                )
    finally:
        for proc in procs:
            up.stop(proc)
        up.stop_all()
    print()
    print("| mode | rounds | KeyRelay / floor, median | min | max | P2 (≥ 80 %) |")
    print("|---|---|---|---|---|---|")
    for mode, values in ratios.items():
        median = statistics.median(values)
        print(
            f"| {mode} | {len(values)} | {100 * median:.0f} % | {100 * min(values):.0f} % "
            f"| {100 * max(values):.0f} % | {'PASS' if median >= 0.8 else 'FAIL'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

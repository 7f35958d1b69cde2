"""P5: how long the dashboard's overview takes with 1,000,000 request-log rows.

Seeds a fresh instance (SQLite, as in production) with N request-log rows spread over the
last 30 days across 8 provider keys, 4 models and 2 profiles (3 % failures), and the
usage_daily roll-ups the proxy would have written for them. Then logs in as the admin and
times, over real HTTP on loopback (werkzeug, one thread), GET / and each of its htmx
partials, plus the request log and usage pages for reference.

    .venv/bin/python bench/overview.py              # 1,000,000 rows, 30 timed loads per page
    .venv/bin/python bench/overview.py --rows 100000 --runs 10
    .venv/bin/python bench/overview.py --write      # and update bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import platform
import random
import re
import sqlite3
import statistics
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import urllib3

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from results import write_section  # noqa: E402

PASSWORD = "bench-admin-password"
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku", "llama-3.1-70b")
KEYS = 8
DAYS = 30
PAGES = (
    ("/", "overview (full page)"),
    ("/partials/cards", "partial: stat cards"),
    ("/partials/key-bars", "partial: key bars"),
    ("/partials/profile-bars", "partial: profile bars"),
    ("/partials/errors", "partial: recent errors"),
    ("/logs", "request log, first page (reference)"),
    ("/logs?status=error", "request log, failures only (reference)"),
    ("/logs?key=3&model=gpt-4o", "request log, key + model filter (reference)"),
    ("/usage", "usage charts (reference)"),
)


def create(instance: Path):
    from cryptography.fernet import Fernet

    from app import create_app

    return create_app(
        {
            "INSTANCE_PATH": str(instance),
            "MASTER_KEY": "bench-master",
            "SECRET_KEY": Fernet.generate_key().decode(),
            "ADMIN_PASSWORD": PASSWORD,
        }
    )


def seed(app, rows: int) -> float:
    """Insert the keys through the app, then the log rows and roll-ups with raw SQL."""
    from extensions import db
    from gateway.keys import provider_keys as keyring

    started = time.perf_counter()
    now = datetime.now(UTC)
    with app.app_context():
        box = app.extensions["keyrelay"].secrets
        for i in range(KEYS):
            data = keyring.parse_key_input(
                {
                    "name": f"key-{i}",
                    "provider": "openai",
                    "secret": f"sk-bench-{i:04d}-{uuid.uuid4().hex}",
                    "base_url": "http://127.0.0.1:9/v1",
                    "profile": "default" if i < 5 else "team",
                    "daily_token_limit": 5_000_000,
                },
                creating=True,
            )
            keyring.create_key(db.session, box, data, now)
        db.session.commit()
        key_profiles = {
            key_id: profile_id
            for key_id, profile_id in db.session.execute(
                db.text("SELECT id, profile_id FROM provider_keys")
            )
        }
        path = db.engine.url.database
    rng = random.Random(7)
    usage = defaultdict(lambda: [0] * 8)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    sql = (
        "INSERT INTO request_logs (request_id, created_at, profile_id, client_key_id, endpoint,"
        " model, provider, provider_key_id, status_code, streamed, input_tokens, output_tokens,"
        " total_tokens, usage_estimated, cost_micros, latency_ms, ttft_ms, attempt_count, error)"
        " VALUES (?, ?, ?, NULL, '/v1/chat/completions', ?, 'openai', ?, ?, ?, ?, ?, ?, 0, ?,"
        " ?, NULL, 1, ?)"
    )
    span = DAYS * 86400
    batch = []
    for n in range(rows):
        at = now - timedelta(seconds=span * (rows - n) / rows)
        key_id = rng.randint(1, KEYS)
        model = MODELS[n % len(MODELS)]
        failed = rng.random() < 0.03
        status = rng.choice((429, 502, 503)) if failed else 200
        tin, tout = (0, 0) if failed else (rng.randint(20, 900), rng.randint(5, 600))
        cost = (tin * 150 + tout * 600) // 1000
        batch.append(
            (
                f"req_{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}",
                at.replace(tzinfo=None).isoformat(sep=" "),
                key_profiles[key_id],
                model,
                key_id,
                status,
                n % 5 == 0,
                tin,
                tout,
                tin + tout,
                cost,
                rng.randint(200, 4000),
                "upstream error" if failed else None,
            )
        )
        u = usage[(at.date(), key_profiles[key_id], key_id, model)]
        u[0] += 1
        u[1 if not failed else 2] += 1
        u[3] += tin
        u[4] += tout
        u[5] += tin + tout
        u[7] += cost
        if len(batch) == 50_000:
            conn.executemany(sql, batch)
            batch.clear()
    if batch:
        conn.executemany(sql, batch)
    conn.executemany(
        "INSERT INTO usage_daily (day, profile_id, provider_key_id, model, requests, successes,"
        " failures, input_tokens, output_tokens, total_tokens, estimated_tokens, cost_micros)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(day.isoformat(), p, k, m, *values) for (day, p, k, m), values in usage.items()],
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - started


def serve(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.port}"


def login(http: urllib3.PoolManager, base: str) -> dict:
    page = http.request("GET", f"{base}/login")
    cookie = page.headers["Set-Cookie"].split(";")[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.data.decode()).group(1)
    answer = http.request(
        "POST",
        f"{base}/login",
        fields={"username": "admin", "password": PASSWORD, "csrf_token": token},
        encode_multipart=False,
        headers={"Cookie": cookie},
        redirect=False,
    )
    assert answer.status == 302, answer.data[:300]
    return {"Cookie": answer.headers["Set-Cookie"].split(";")[0]}


def time_pages(base: str, headers: dict, runs: int) -> list[tuple[str, str, list[float], int]]:
    http = urllib3.PoolManager(retries=False)
    results = []
    for path, label in PAGES:
        http.request("GET", base + path, headers=headers)  # warm
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            response = http.request("GET", base + path, headers=headers, redirect=False)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status == 200, (path, response.status)
        results.append((path, label, samples, len(response.data)))
    return results


def _machine() -> str:
    """CPU model and count, as the proxy benchmark reports them."""
    model = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{os.cpu_count()} CPUs ({model})"


def main() -> int:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    instance = BENCH / "out" / "tmp" / f"overview-{uuid.uuid4().hex[:8]}"
    app = create(instance)
    seconds = seed(app, args.rows)
    print(f"seeded {args.rows:,} request-log rows in {seconds:.1f} s ({instance})")
    server, base = serve(app)
    http = urllib3.PoolManager(retries=False)
    headers = login(http, base)
    results = time_pages(base, headers, args.runs)
    server.shutdown()
    app.extensions["keyrelay"].close()
    overview = statistics.median(results[0][2])
    lines = [
        "## Overview page with a large request log (P5, `bench/overview.py`)",
        "",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Command: `python bench/overview.py"
        f" --rows {args.rows} --runs {args.runs}`. {args.rows:,} request-log rows over {DAYS}"
        f" days, {KEYS} keys, {len(MODELS)} models, 3 % failures; SQLite (WAL); one logged-in"
        f" admin over loopback HTTP (werkzeug, single thread); {_machine()},"
        f" Python {platform.python_version()}.",
        "",
        "| page | p50 ms | p95 ms | max ms | bytes |",
        "|---|---|---|---|---|",
    ]
    for path, label, samples, size in results:
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        lines.append(
            f"| `{path}` {label} | {statistics.median(samples):.1f} | {p95:.1f} |"
            f" {max(samples):.1f} | {size:,} |"
        )
    verdict = "PASS" if overview < 200 else "FAIL"
    lines += [
        "",
        f"- P5 (overview under 200 ms with {args.rows:,} rows): {verdict}, p50 {overview:.1f} ms.",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        write_section("overview", report)
        print("wrote bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What translating a client dialect or a provider costs: KeyRelay serving Anthropic
Messages and the Responses API from an OpenAI-format upstream, and OpenAI chat from
Anthropic and Gemini upstreams, against the OpenAI chat passthrough, in the same run
(same nginx fake upstream, same gunicorn settings as bench/run.py).

    .venv/bin/python bench/dialects.py            # 5 s runs
    .venv/bin/python bench/dialects.py --quick    # 3 s runs

Per case: one request checked, a warm-up, p50/p99 with one client, req/s with 64. The
"added p50" column is the case's p50 minus the chat passthrough's of the same mode.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.request

import run
import upstream as up

LUA = up.BENCH_DIR / "dialect.lua"
PROMPT = [{"role": "user", "content": "hi"}]
# (case, mode, path, body): mode picks the upstream (JSON or SSE) through the profile.
CASES = [
    ("openai chat (passthrough)", "chat", "/v1/chat/completions",
     {"model": up.MODEL, "messages": PROMPT}),
    ("anthropic messages (translated)", "chat", "/v1/messages",
     {"model": up.MODEL, "max_tokens": 64, "messages": PROMPT}),
    ("responses (translated)", "chat", "/v1/responses",
     {"model": up.MODEL, "input": "hi", "store": False}),
    ("openai chat (passthrough)", "stream", "/v1/chat/completions",
     {"model": up.MODEL, "messages": PROMPT, "stream": True}),
    ("anthropic messages (translated)", "stream", "/v1/messages",
     {"model": up.MODEL, "max_tokens": 64, "messages": PROMPT, "stream": True}),
    ("responses (translated)", "stream", "/v1/responses",
     {"model": up.MODEL, "input": "hi", "store": False, "stream": True}),
    # The same clients against an `anthropic` provider key (nginx answering Messages).
    ("anthropic messages (passthrough)", "achat", "/v1/messages",
     {"model": up.MODEL, "max_tokens": 64, "messages": PROMPT}),
    ("openai chat -> anthropic (translated)", "achat", "/v1/chat/completions",
     {"model": up.MODEL, "messages": PROMPT}),
    ("anthropic messages (passthrough)", "astream", "/v1/messages",
     {"model": up.MODEL, "max_tokens": 64, "messages": PROMPT, "stream": True}),
    ("openai chat -> anthropic (translated)", "astream", "/v1/chat/completions",
     {"model": up.MODEL, "messages": PROMPT, "stream": True}),
    # And against a `gemini` provider key (nginx answering generateContent).
    ("openai chat -> gemini (translated)", "gchat", "/v1/chat/completions",
     {"model": up.MODEL, "messages": PROMPT}),
    ("openai chat -> gemini (translated)", "gstream", "/v1/chat/completions",
     {"model": up.MODEL, "messages": PROMPT, "stream": True}),
]  # fmt: skip
PROFILES = {
    "chat": "bench",
    "stream": "bench-stream",
    "achat": "bench-anthropic",
    "astream": "bench-anthropic-stream",
    "gchat": "bench-gemini",
    "gstream": "bench-gemini-stream",
}
# The reference of each mode: the OpenAI chat passthrough of the same shape.
REFERENCE = {
    "chat": "chat",
    "stream": "stream",
    "achat": "chat",
    "astream": "stream",
    "gchat": "chat",
    "gstream": "stream",
}
# The translated provider keys: (provider, profile, base URL path on nginx).
PROVIDER_KEYS = [
    ("anthropic", "bench-anthropic", "/v1"),
    ("anthropic", "bench-anthropic-stream", "/stream/v1"),
    ("gemini", "bench-gemini", "/v1beta"),
    ("gemini", "bench-gemini-stream", "/v1beta"),  # Gemini streams at their own path
]


def wrk(base: str, path: str, body: dict, profile: str, auth: str, conns: int, secs: int):
    env = {**os.environ, "BENCH_AUTH": auth, "BENCH_PROFILE": profile}
    env["BENCH_BODY"] = json.dumps(body)
    threads = 1 if conns == 1 else 2
    cmd = [up.ensure_tool("wrk", "wrk"), f"-t{threads}", f"-c{conns}", f"-d{secs}s"]
    cmd += ["--timeout", "10s", "--latency", "-s", str(LUA), base + path]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=secs + 60)
    found = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.M)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    result = json.loads(found.group(1))
    result["rps"] = (result["requests"] - result["err_status"]) / (result["duration_us"] / 1e6)
    result["errors"] = sum(v for k, v in result.items() if k.startswith("err_"))
    return result


def check(base: str, path: str, body: dict, profile: str, auth: str) -> None:
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {auth}",
        "X-Profile": profile,
    }
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    want = {
        "/v1/chat/completions": "[DONE]" if body.get("stream") else '"total_tokens"',
        "/v1/messages": "message_stop" if body.get("stream") else '"output_tokens"',
        "/v1/responses": "response.completed" if body.get("stream") else '"output_tokens"',
    }[path]
    if want not in text:
        raise RuntimeError(f"{path}: unexpected answer {text[:300]!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    secs = 3 if args.quick else args.duration
    up.OUT_DIR.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        _, nginx_port = up.start_nginx()
        conf, _ = run.gunicorn_conf()
        server = run.Server(None, None)
        extra, master = run.keyrelay_env("dialects")
        port = up.free_port()
        env = run.server_env(server, port, extra)
        proc = run.start_gunicorn(conf, "app:create_app()", env, port, "keyrelay-dialects")
        base = f"http://127.0.0.1:{port}"
        try:
            run.register_keys(base, master, nginx_port)
            for provider, profile, prefix in PROVIDER_KEYS:
                status, answer = run.api(
                    "POST",
                    f"{base}/api/admin/keys",
                    master,
                    {
                        "profile": profile,
                        "provider": provider,
                        "name": profile,
                        "secret": f"bench-{provider}-key-0001",
                        "base_url": f"http://127.0.0.1:{nginx_port}{prefix}",
                        "models": ["*"],
                    },
                )
                if status != 201:
                    raise RuntimeError(f"{provider} key for {profile}: {status} {answer}")
            for case, mode, path, body in CASES:
                profile = PROFILES[mode]
                check(base, path, body, profile, master)
                wrk(base, path, body, profile, master, 64, 1)  # warm-up
                latency = wrk(base, path, body, profile, master, 1, secs)
                load = wrk(base, path, body, profile, master, 64, secs)
                rows.append((case, mode, latency, load))
                print(
                    f"  {case:<32} {mode:<6} p50 {latency['p50_us'] / 1e3:.3f} ms"
                    f"  rps64 {load['rps']:.0f}  errors {load['errors']}",
                    flush=True,
                )
        finally:
            up.stop(proc)
    finally:
        up.stop_all()
    print()
    print(
        "| case | mode | p50 ms | p99 ms | added p50 ms | p50 ms @64 | added p50 ms @64 "
        "| req/s @64 | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    reference = {
        mode: (lat["p50_us"], load["p50_us"])
        for case, mode, lat, load in rows
        if case.startswith("openai chat (")
    }
    for case, mode, lat, load in rows:
        one, many = reference[REFERENCE[mode]]
        print(
            f"| {case} | {mode} | {lat['p50_us'] / 1e3:.3f} | {lat['p99_us'] / 1e3:.3f} "
            f"| {(lat['p50_us'] - one) / 1e3:+.3f} | {load['p50_us'] / 1e3:.3f} "
            f"| {(load['p50_us'] - many) / 1e3:+.3f} | {load['rps']:.0f} | {load['errors']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

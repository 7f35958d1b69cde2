"""Cost of scrubbing a key's secret from upstream answers (gateway/keys/scrub.py), one thread.

Run from the repo root: `PYTHONPATH=$PWD .venv/bin/python bench/scrub.py`. Prints µs per
whole answer body and per streamed chunk (a typical SSE event, and a 64 KiB read), with
a bearer secret and with a Basic (email:token) one.
"""

from __future__ import annotations

import json
import time

from gateway.keys.scrub import scrubber

SECRET = "sk-proj-" + "a1B2c3D4e5F6g7H8" * 3
EVENT = (
    "data: "
    + json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": " hello"}, "finish_reason": None}],
        }
    )
    + "\n\n"
).encode()
BODY = json.dumps({"choices": [{"message": {"content": "word " * 400}}]}).encode()
BIG = EVENT * (65536 // len(EVENT))


def per_call(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    for label, scrub in (("bearer", scrubber(SECRET)), ("basic", scrubber(SECRET, "a@b.co"))):
        n = 20000
        body = per_call(lambda s=scrub: s.data(BODY), n)
        events = [EVENT] * n
        start = time.perf_counter()
        for _ in scrub.chunks(iter(events)):
            pass
        event = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        for _ in iter(events):
            pass
        bare = (time.perf_counter() - start) / n * 1e6
        big = per_call(lambda s=scrub: list(s.chunks(iter([BIG]))), 2000)
        print(
            f"{label}: {len(scrub.forms)} forms; body {len(BODY)} B {body:.2f} µs; "
            f"SSE chunk {len(EVENT)} B {event - bare:.2f} µs; 64 KiB chunk {big:.2f} µs"
        )


if __name__ == "__main__":
    main()

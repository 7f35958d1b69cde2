"""Setup shared by the budget overspend tests (test_budget_overspend*.py): cheap prices,
priced keys, patient timeouts, and clients started at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anthropic
import openai

from tests.conftest import chat
from tests.fake_anthropic import FakeAnthropic

# 1 micro-dollar per token: a $0.01 budget pays 10,000 tokens.
CHEAP = {"input_per_mtok": "1", "output_per_mtok": "1"}
# "Say hello" counts 8 prompt tokens; without max_tokens a request reserves 256 more.
RESERVATION = 8 + 256
# Many streams at once on a busy machine: the test's upstream may be slow to answer.
PATIENT = {"READ_TIMEOUT": 20.0, "CONNECT_TIMEOUT": 20.0, "REQUEST_DEADLINE": 60.0}


def priced_key(admin, upstream, secret: str, model: str = "gpt-4o-mini", **fields) -> None:
    """A provider key of the upstream (named `main` unless told), its model priced CHEAP."""
    admin.add_key(secret, upstream.base_url, **{"name": "main", **fields})
    assert admin.call("PUT", f"/prices/{model}", CHEAP).status == 200


@contextmanager
def priced_claude(admin, secret: str) -> Iterator[FakeAnthropic]:
    """A fake Anthropic API with a key in the pool, claude-sonnet-4-5 priced CHEAP."""
    with FakeAnthropic([secret]) as claude:
        priced_key(admin, claude, secret, "claude-sonnet-4-5", provider="anthropic", name="claude")
        yield claude


def native(server, key: str) -> anthropic.Anthropic:
    """The Anthropic SDK calling KeyRelay with a client key."""
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


def parallel(count: int, one: Callable[[], None]) -> None:
    """Run `one` in `count` threads released at the same moment; wait for them all."""
    barrier = threading.Barrier(count)

    def run() -> None:
        barrier.wait()
        one()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def streams_at_once(client, count: int = 50) -> tuple[list[list[str]], list[str]]:
    """`count` chat streams started at once: the finish reasons of each one answered, and
    the error codes of those refused."""
    finishes, refusals = [], []

    def one() -> None:
        try:
            stream = client.chat.completions.create(**chat(), stream=True)
            reasons = [c.choices[0].finish_reason for c in stream if c.choices]
            finishes.append([r for r in reasons if r])
        except openai.APIStatusError as exc:
            refusals.append(exc.body["code"])

    parallel(count, one)
    return finishes, refusals

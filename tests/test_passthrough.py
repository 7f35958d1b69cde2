"""Faithful passthrough through the official SDKs: the client headers an upstream honours
reach it (and nothing else of the client's does), a conversation stays on the provider
key that holds its state, a passthrough response is read back from its upstream, and
prompt-cache hits of OpenAI-format upstreams are booked and priced as cache reads."""

from __future__ import annotations

from decimal import Decimal

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from tests.fake_upstream import Behaviour

SECRET = "sk-passthrough-aaaaaaaaaaaaaaaa"
OTHER = "sk-passthrough-bbbbbbbbbbbbbbbb"


def logged(server, admin) -> list[dict]:
    server.app.extensions["keyrelay"].books.flush()
    return admin.logs()


def exact_micros(model: str, provider: str, prompt: int, cached: int, output: int) -> Decimal:
    """What genai-prices says the usage costs, in micro-dollars (rounded half up)."""
    usage = PriceUsage(input_tokens=prompt, cache_read_tokens=cached, output_tokens=output)
    price = calc_price(usage, model, provider_id=provider).total_price
    return (price * 1_000_000).quantize(Decimal(1))


# -- cached prompt tokens ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("provider", "model", "deepseek"),
    [("openai", "gpt-4o-mini", False), ("deepseek", "deepseek-chat", True)],
)
def test_cached_prompt_tokens_are_priced_as_cache_reads(
    client, admin, fake, server, provider, model, deepseek, stream
):
    admin.add_key(SECRET, fake.base_url, provider=provider)
    fake.set_behaviour(SECRET, Behaviour.cached(5000, 3968, deepseek=deepseek))
    asked = {"model": model, "messages": [{"role": "user", "content": "Use the cache"}]}
    if stream:
        chunks = list(client.chat.completions.create(**asked, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        client.chat.completions.create(**asked)
    reported = fake.usage_reported[0]
    (row,) = logged(server, admin)
    assert (row["input_tokens"], row["cache_read_tokens"]) == (5000, 3968)
    assert not row["cache_write_tokens"] and not row["usage_estimated"]
    output = reported["completion_tokens"]
    cost = Decimal(row["cost_usd"]) * 1_000_000
    assert cost == exact_micros(model, provider, 5000, 3968, output)
    # The same usage without the cache hit would have cost more: the hit was priced apart.
    assert cost < exact_micros(model, provider, 5000, 0, output)


@pytest.mark.parametrize("stream", [False, True])
def test_cached_tokens_of_a_responses_upstream_are_cache_reads(client, admin, fake, server, stream):
    admin.add_key(SECRET, fake.base_url, responses_api=True)
    fake.set_behaviour(SECRET, Behaviour.cached(6000, 4096))
    asked = {"model": "gpt-4o-mini", "input": "Use the cache"}
    if stream:
        events = list(client.responses.create(**asked, stream=True))
        usage = events[-1].response.usage
    else:
        usage = client.responses.create(**asked).usage
    assert usage.input_tokens_details.cached_tokens == 4096  # the upstream's, relayed
    (row,) = logged(server, admin)
    assert (row["input_tokens"], row["cache_read_tokens"]) == (6000, 4096)
    cost = Decimal(row["cost_usd"]) * 1_000_000
    assert cost == exact_micros("gpt-4o-mini", "openai", 6000, 4096, usage.output_tokens)

"""Faithful passthrough through the official SDKs: the client headers an upstream honours
reach it (and nothing else of the client's does), a conversation stays on the provider
key that holds its state, a passthrough response is read back from its upstream, and
prompt-cache hits of OpenAI-format upstreams are booked and priced as cache reads."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import openai
import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from tests.conftest import MASTER_KEY
from tests.fake_anthropic import FakeAnthropic
from tests.fake_upstream import Behaviour

SECRET = "sk-passthrough-aaaaaaaaaaaaaaaa"
OTHER = "sk-passthrough-bbbbbbbbbbbbbbbb"
CLAUDE = "sk-ant-api03-passthrough-aaaaaaaa"
BETAS = "interleaved-thinking-2025-05-14,context-1m-2025-08-07"


@pytest.fixture
def claude():
    with FakeAnthropic([CLAUDE]) as fake:
        yield fake


@pytest.fixture
def messages_sdk(server):
    client = anthropic.Anthropic(
        base_url=server.url,
        api_key=MASTER_KEY,
        max_retries=0,
        default_headers={"anthropic-beta": BETAS, "x-claude-code-session-id": "s-1"},
    )
    yield client
    client.close()


def logged(server, admin) -> list[dict]:
    server.app.extensions["keyrelay"].books.flush()
    return admin.logs()


def exact_micros(model: str, provider: str, prompt: int, cached: int, output: int) -> Decimal:
    """What genai-prices says the usage costs, in micro-dollars (rounded half up)."""
    usage = PriceUsage(input_tokens=prompt, cache_read_tokens=cached, output_tokens=output)
    price = calc_price(usage, model, provider_id=provider).total_price
    return (price * 1_000_000).quantize(Decimal(1))


# -- client headers -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_beta_reaches_an_anthropic_key(messages_sdk, admin, claude, stream):
    admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
    asked = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
        # What the client says of the version is not passed on: the adapter's is.
        "extra_headers": {"anthropic-version": "2023-01-01"},
    }
    if stream:
        with messages_sdk.messages.stream(**asked) as events:
            assert events.get_final_message().content[0].text
    else:
        assert messages_sdk.messages.create(**asked).content[0].text
    (sent,) = claude.messages_requests
    assert sent.headers["anthropic-beta"] == BETAS
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.key == CLAUDE and "authorization" not in sent.headers
    assert not [name for name in sent.headers if name.startswith("x-stainless")]
    assert "x-claude-code-session-id" not in sent.headers


def test_the_sdk_betas_parameter_reaches_an_anthropic_key(server, admin, claude):
    admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
    sdk = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    sdk.beta.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=50,
        messages=[{"role": "user", "content": "hi"}],
        betas=["token-efficient-tools-2025-02-19", "fine-grained-tool-streaming-2025-05-14"],
    )
    sdk.close()
    (sent,) = claude.messages_requests
    assert sent.headers["anthropic-beta"] == (
        "token-efficient-tools-2025-02-19,fine-grained-tool-streaming-2025-05-14"
    )


def test_anthropic_beta_does_not_reach_another_kind(messages_sdk, admin, fake):
    admin.add_key(SECRET, fake.base_url)
    messages_sdk.messages.create(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    (sent,) = fake.requests
    assert "anthropic-beta" not in sent.headers and sent.secret == SECRET


@pytest.mark.parametrize("endpoint", ["chat", "responses"])
def test_openai_beta_reaches_an_openai_key_and_the_accounts_headers_do_not(
    server, admin, fake, endpoint
):
    admin.add_key(SECRET, fake.base_url, responses_api=True)
    client = openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key=MASTER_KEY,
        max_retries=0,
        organization="org-client",
        project="proj-client",
        default_headers={"OpenAI-Beta": "assistants=v2"},
    )
    if endpoint == "chat":
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    else:
        client.responses.create(model="gpt-4o-mini", input="hi")
    client.close()
    (sent,) = fake.requests
    assert sent.headers["openai-beta"] == "assistants=v2" and sent.secret == SECRET
    for name in ("openai-organization", "openai-project", "x-stainless-lang"):
        assert name not in sent.headers


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

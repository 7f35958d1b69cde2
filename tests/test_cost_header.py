"""Every answer on /v1 carries `x-keyrelay-cost`: the request's booked cost in USD, or
for a stream, whose usage comes at its end, the cost estimated when its headers are sent
(with `x-keyrelay-cost-estimated: true`)."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import openai
import pytest
import urllib3

from tests.conftest import MASTER_KEY, chat
from tests.fake_upstream import Behaviour

SECRET = "sk-cost-aaaaaaaaaaaaaaaaaaaa1111"
PRICE = {"input_per_mtok": "1000", "output_per_mtok": "1000"}  # 1000 micro-dollars a token


@pytest.fixture
def priced(admin, fake):
    admin.add_key(SECRET, fake.base_url, name="main")
    assert admin.call("PUT", "/prices/gpt-4o-mini", PRICE).status == 200


def logged(admin, request_id: str) -> str:
    (row,) = [r for r in admin.logs(limit=50) if r["request_id"] == request_id]
    return row["cost_usd"]


def test_an_answer_carries_its_booked_cost(admin, client, priced):
    raw = client.chat.completions.with_raw_response.create(**chat())
    cost = raw.headers["x-keyrelay-cost"]
    assert Decimal(cost) > 0 and "x-keyrelay-cost-estimated" not in raw.headers
    assert cost == logged(admin, raw.headers["x-keyrelay-request-id"])
    embedded = client.embeddings.with_raw_response.create(model="gpt-4o-mini", input="hi")
    assert embedded.headers["x-keyrelay-cost"] == logged(
        admin, embedded.headers["x-keyrelay-request-id"]
    )


def test_a_stream_carries_the_cost_estimated_when_it_starts(admin, client, priced):
    raw = client.chat.completions.with_raw_response.create(**chat(content="x" * 400), stream=True)
    assert raw.headers["x-keyrelay-cost-estimated"] == "true"
    # Its prompt, estimated from its length (about 4 characters a token), at $0.001 a token.
    assert Decimal(raw.headers["x-keyrelay-cost"]) >= Decimal("0.1")
    list(raw.parse())  # read to its end


def test_a_budgeted_stream_carries_its_reservation(admin, server, priced):
    created = admin.call("POST", "/client-keys", {"name": "b", "max_budget": "10"}).json()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=created["key"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(**chat(), stream=True, max_tokens=5)
    assert raw.headers["x-keyrelay-cost"] == "0.013000"  # 8 prompt + 5 answer tokens
    list(raw.parse())


def test_errors_carry_a_cost_too(admin, server, client, fake, priced):
    fake.set_behaviour(SECRET, Behaviour.bad_request("bad thing"))
    with pytest.raises(openai.BadRequestError) as upstream:
        client.chat.completions.create(**chat())
    assert upstream.value.response.headers["x-keyrelay-cost"] == "0.000000"
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model="gpt-4o-mini", messages="nope")
    assert invalid.value.response.headers["x-keyrelay-cost"] == "0.000000"
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.chat.completions.create(**chat())
    assert refused.value.response.headers["x-keyrelay-cost"] == "0.000000"
    http = urllib3.PoolManager()
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    for path, body in (("/v1/chat/completions", b"{not json"), ("/v1/nowhere", b"{}")):
        answer = http.request("POST", server.url + path, body=body, headers=headers)
        assert answer.status in (400, 404, 405)
        assert answer.headers["x-keyrelay-cost"] == "0.000000"
    assert client.models.with_raw_response.list().headers["x-keyrelay-cost"] == "0.000000"


def test_anthropic_answers_carry_it(admin, server, priced):
    client = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert Decimal(raw.headers["x-keyrelay-cost"]) > 0

"""Cost (F42): genai-prices' table or an admin override, integer micro-dollars, exact."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import anthropic
import openai
import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from gateway.ledger.pricing import Price, from_table
from models.types import usd
from tests.conftest import chat

SECRET = "sk-price-aaaaaaaaaaaaaaaa1111"


def expected_micros(model: str, input_tokens: int, output_tokens: int) -> int:
    """What genai-prices itself says, in micro-dollars, rounded half-up."""
    usage = PriceUsage(input_tokens=input_tokens, output_tokens=output_tokens)
    total = calc_price(usage, model, provider_id="openai").total_price * 1_000_000
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@pytest.fixture
def provider(admin, fake):
    admin.add_key(SECRET, fake.base_url, name="main")


@pytest.mark.both_databases
def test_requests_are_priced_from_the_table(admin, client, provider, web):
    costs = 0
    for model in ("gpt-4o-mini", "gpt-4o"):
        reply = client.chat.completions.create(**chat(model=model, content="price me " * 50))
        usage = reply.usage
        cost = expected_micros(model, usage.prompt_tokens, usage.completion_tokens)
        assert cost > 0
        [log] = admin.logs(limit=1)
        assert log["cost_usd"] == usd(cost)
        costs += cost
    today = admin.stats()["today"]
    assert today["cost_usd"] == usd(costs)
    cards = web.get("/partials/cards").text
    assert f"${Decimal(costs) / 1_000_000:.6f}".rstrip("0") in cards


@pytest.mark.both_databases
def test_an_override_wins_and_can_be_removed(admin, client, provider):
    answer = admin.call(
        "PUT", "/prices/gpt-4o-mini", {"input_per_mtok": "1000", "output_per_mtok": "2000.5"}
    )
    assert answer.status == 200
    assert answer.json()["source"] == "override"
    assert answer.json()["output_per_mtok"] == "2000.5"
    usage = client.chat.completions.create(**chat()).usage
    [log] = admin.logs(limit=1)
    micros = Decimal(usage.prompt_tokens * 1000) + Decimal("2000.5") * usage.completion_tokens
    rounded = int(micros.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert log["cost_usd"] == usd(rounded)
    assert admin.call("DELETE", "/prices/gpt-4o-mini").status == 204
    assert admin.call("GET", "/prices/gpt-4o-mini").json()["source"] == "genai-prices"
    assert admin.call("DELETE", "/prices/gpt-4o-mini").status == 404
    listed = {p["model"]: p for p in admin.call("GET", "/prices").json()["data"]}
    assert listed["gpt-4o-mini"]["input_per_mtok"] == "0.15"


def test_an_unknown_model_costs_nothing_until_priced(admin, client, fake):
    admin.add_key(SECRET, fake.base_url, name="main", models=["my-local-llama"])
    client.chat.completions.create(**chat(model="my-local-llama"))
    [log] = admin.logs(limit=1)
    assert log["cost_usd"] == "0.000000"
    assert admin.call("GET", "/prices/my-local-llama").json()["source"] is None
    admin.call("PUT", "/prices/my-local-llama", {"input_per_mtok": "1", "output_per_mtok": "1"})
    usage = client.chat.completions.create(**chat(model="my-local-llama")).usage
    [log] = admin.logs(limit=1)
    assert log["cost_usd"] == usd(usage.total_tokens)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input_per_mtok": "abc", "output_per_mtok": "1"}, "input_per_mtok"),
        ({"input_per_mtok": "1", "output_per_mtok": "-2"}, "output_per_mtok"),
        ({"input_per_mtok": "1"}, "output_per_mtok"),
        ({"input_per_mtok": "NaN", "output_per_mtok": "1"}, "input_per_mtok"),
    ],
)
def test_bad_prices_are_refused(admin, body, param):
    answer = admin.call("PUT", "/prices/gpt-4o", body)
    assert answer.status == 400 and answer.json()["error"]["param"] == param


def test_micro_dollars_are_rounded_once_per_request():
    price = Price(Decimal("0.15"), Decimal("0.6"), "test", "m")
    assert price.micros(1, 1) == 1  # 0.75 -> 1
    assert price.micros(3, 0) == 0  # 0.45 -> 0
    assert price.micros(1_000_000, 1_000_000) == 750_000  # $0.75 exactly
    assert isinstance(price.micros(7, 7), int)
    assert usd(20) == "0.000020" and usd(1_234_567) == "1.234567"


def test_tiered_prices_are_left_to_genai_prices():
    price = from_table(None, "gemini-2.5-pro")
    assert price.exact is not None
    usage = PriceUsage(input_tokens=300_000, output_tokens=1_000)
    exact = calc_price(usage, "gemini-2.5-pro").total_price * 1_000_000
    assert price.micros(300_000, 1_000) == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@pytest.mark.both_databases
def test_prices_page(web, admin, client, provider):
    client.chat.completions.create(**chat())
    page = web.get("/prices").text
    assert 'data-model="gpt-4o-mini"' in page and "$0.15" in page and "genai-prices" in page
    bad = web.post(
        "/prices", {"model": "gpt-4o-mini", "input_per_mtok": "x", "output_per_mtok": "1"}
    )
    assert bad.status_code == 422 and 'name="input_per_mtok" value="x"' in bad.text
    assert (
        web.post(
            "/prices", {"model": "gpt-4o-mini", "input_per_mtok": "9", "output_per_mtok": "10"}
        ).status_code
        == 302
    )
    assert admin.call("GET", "/prices/gpt-4o-mini").json()["input_per_mtok"] == "9"
    assert "Remove override" in web.get("/prices").text
    assert web.post("/prices/delete", {"model": "gpt-4o-mini"}).status_code == 302
    assert admin.call("GET", "/prices/gpt-4o-mini").json()["source"] == "genai-prices"


def test_a_budgeted_key_is_refused_a_model_without_a_price(admin, server, fake, web):
    """An unpriced model would cost a budgeted key nothing: refused, naming the missing
    price, until the admin sets one (a flat price per request is enough); the prices page
    lists it meanwhile. A key without a budget is served as before."""
    admin.add_key(SECRET, fake.base_url, name="main", models=["my-local-llama"])
    budgeted = admin.call("POST", "/client-keys", {"name": "b", "max_budget": "1.00"}).json()
    free = admin.call("POST", "/client-keys", {"name": "f"}).json()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=budgeted["key"], max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**chat(model="my-local-llama"))
    error = refused.value.body
    assert (error["code"], error["param"]) == ("model_price_unknown", "model")
    assert "'my-local-llama' has no known price" in error["message"]
    assert fake.requests == []  # the upstream never saw it
    with pytest.raises(anthropic.BadRequestError) as shaped:  # in the client's own dialect
        anthropic.Anthropic(
            base_url=server.url, api_key=budgeted["key"], max_retries=0
        ).messages.create(
            model="my-local-llama", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert "has no known price" in shaped.value.body["error"]["message"]
    plain = openai.OpenAI(base_url=f"{server.url}/v1", api_key=free["key"], max_retries=0)
    plain.chat.completions.create(**chat(model="my-local-llama"))  # no budget: served
    page = web.get("/prices").text
    assert '<tr data-unpriced="my-local-llama"><td>my-local-llama</td><td>3</td>' in page
    flat = admin.call("PUT", "/prices/my-local-llama", {"per_request": "0.002"})
    assert flat.status == 200 and flat.json()["per_request"] == "0.002"
    client.chat.completions.create(**chat(model="my-local-llama"))
    [log] = admin.logs(limit=1)
    assert log["cost_usd"] == "0.002000"  # the flat price; its tokens cost nothing
    assert 'data-unpriced="my-local-llama"' not in web.get("/prices").text
    bad = admin.call("PUT", "/prices/my-local-llama", {"per_request": "-1"})
    assert bad.status == 400 and bad.json()["error"]["param"] == "per_request"


def test_a_flat_price_is_set_on_the_prices_page(web, admin, client, provider):
    form = {"model": "gpt-4o-mini", "input_per_mtok": "1", "output_per_mtok": "1"}
    assert web.post("/prices", {**form, "per_request": "0.5"}).status_code == 302
    assert admin.call("GET", "/prices/gpt-4o-mini").json()["per_request"] == "0.5"
    assert "$0.5" in web.get("/prices").text
    usage = client.chat.completions.create(**chat()).usage
    [log] = admin.logs(limit=1)
    assert log["cost_usd"] == usd(500_000 + usage.total_tokens)
    bad = web.post("/prices", {**form, "per_request": "lots"})
    assert bad.status_code == 422 and 'name="per_request" value="lots"' in bad.text


def test_a_cost_limited_provider_key_does_not_serve_an_unpriced_model(admin, client, fake):
    """A provider key's cost limit would never be reached by a model that costs nothing:
    such a key is passed over for it (400 when no other key serves it), until it is priced."""
    admin.add_key(SECRET, fake.base_url, name="capped", models=["my-local-llama"],
                  daily_cost_limit="1.00")  # fmt: skip
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**chat(model="my-local-llama"))
    assert refused.value.body["code"] == "model_price_unknown"
    assert "provider keys that serve it have cost limits" in refused.value.body["message"]
    assert fake.requests == []
    free = "sk-price-free-aaaaaaaaaaaaa2222"
    admin.add_key(free, fake.base_url, name="free", models=["my-local-llama"])
    client.chat.completions.create(**chat(model="my-local-llama"))
    assert [r.secret for r in fake.requests] == [free]  # the key without a limit served
    admin.call("PUT", "/prices/my-local-llama", {"input_per_mtok": "1", "output_per_mtok": "1"})
    client.chat.completions.create(**chat(model="my-local-llama", content="again"))
    assert len(fake.requests) == 2


def test_a_model_priced_only_under_its_keys_provider_is_not_listed_as_unknown(
    admin, client, fake, web
):
    """genai-prices knows llama-3.1-8b-instant under Groq only: a Groq key's requests are
    priced, and the prices page and API say so (not "unknown: costs $0")."""
    model = "llama-3.1-8b-instant"
    assert from_table(None, model) is None and from_table("groq", model) is not None
    admin.add_key(SECRET, fake.base_url, name="groq", provider="groq", models=[model])
    client.chat.completions.create(**chat(model=model, content="price me " * 50))
    [log] = admin.logs(limit=1)
    assert log["cost_usd"] != usd(0)
    listed = {p["model"]: p for p in admin.call("GET", "/prices").json()["data"]}
    assert listed[model]["source"] == "genai-prices" and listed[model]["input_per_mtok"]
    assert admin.call("GET", f"/prices/{model}").json()["source"] == "genai-prices"
    page = web.get("/prices").text
    row = page[page.index(f'data-model="{model}"') :].split("</tr>")[0]
    assert "unknown" not in row and "genai-prices" in row

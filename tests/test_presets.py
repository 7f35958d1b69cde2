"""Presets of OpenAI-compatible providers: a default base URL, the provider's own prices,
its name as `owned_by`; listed in the admin API and the key form."""

from __future__ import annotations

from decimal import Decimal

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from tests.conftest import chat

SECRET = "gsk_preset_aaaaaaaaaaaaaaaaaaaa"
LLAMA = "llama-3.3-70b-versatile"


def test_presets_are_listed_with_their_defaults(admin, web):
    kinds = {k["provider"]: k for k in admin.call("GET", "/providers").json()["data"]}
    assert {"openai", "anthropic", "groq", "together", "openrouter", "deepseek", "mistral",
            "google-ai-studio-openai"} <= set(kinds)  # fmt: skip
    assert kinds["groq"]["default_base_url"] == "https://api.groq.com/openai/v1"
    assert kinds["google-ai-studio-openai"]["price_provider"] == "google"
    form = web.get("/keys/new").text
    assert "<option >groq</option>" in form or ">groq</option>" in form


def test_a_preset_key_gets_its_default_base_url(admin):
    made = admin.call(
        "POST", "/keys", {"provider": "groq", "name": "groq", "secret": SECRET}
    ).json()
    assert made["base_url"] == "https://api.groq.com/openai/v1"


def test_a_preset_key_is_priced_as_its_provider_and_owns_its_models(admin, fake, client, server):
    admin.add_key(SECRET, fake.base_url, provider="groq", name="groq", models=[LLAMA])
    completion = client.chat.completions.create(**chat(model=LLAMA))
    listed = {m.id: m.owned_by for m in client.models.list().data}
    assert listed[LLAMA] == "groq"
    server.app.extensions["keyrelay"].books.flush()
    (row,) = admin.logs()
    assert row["provider"] == "groq"
    usage = completion.usage
    expected = calc_price(
        PriceUsage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens),
        LLAMA,
        provider_id="groq",
    ).total_price
    assert Decimal(row["cost_usd"]) * 1_000_000 == (expected * 1_000_000).quantize(Decimal(1))
    assert Decimal(row["cost_usd"]) > 0

"""Price commands: a bad price names its field; a set or dropped override prices the
next request at once; each is audited once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.admin import prices, provider_keys
from gateway.admin.errors import InputError
from gateway.keys import provider_keys as keyring
from tests.admin.conftest import audits
from tests.conftest import chat


def _cost(client) -> Decimal:
    reply = client.chat.completions.with_raw_response.create(**chat())
    return Decimal(reply.headers["x-keyrelay-cost"])


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"input_per_mtok": "cheap", "output_per_mtok": "1"}, "input_per_mtok"),
        ({"input_per_mtok": "1", "output_per_mtok": "-1"}, "output_per_mtok"),
        ({"per_request": "free"}, "per_request"),
    ],
)
def test_a_bad_price_names_its_field(admin_ctx, data, field):
    with pytest.raises(InputError) as refused:
        prices.set_price(admin_ctx, "gpt-4o-mini", data)
    assert refused.value.field == field
    assert audits(admin_ctx, "price.set") == []


def test_an_override_prices_the_next_request_and_is_audited_once(admin_ctx, fake, client):
    body = {"provider": "openai", "name": "up", "secret": "sk-up", "base_url": fake.base_url}
    provider_keys.create(admin_ctx, keyring.parse_key_input({**body, "models": "*"}, True))
    _cost(client)  # the price table is read now
    # A million USD per million input tokens: a dollar for each of the 3 prompt tokens.
    data = {"input_per_mtok": "1000000", "output_per_mtok": "0"}
    prices.set_price(admin_ctx, "gpt-4o-mini", data)
    assert _cost(client) == Decimal(3)
    [entry] = audits(admin_ctx, "price.set")
    assert entry.target == "model:gpt-4o-mini"
    assert entry.detail == {
        "input_per_mtok": "1000000",
        "output_per_mtok": "0",
        "per_request": "None",
    }
    assert prices.delete_price(admin_ctx, "gpt-4o-mini") is True
    assert _cost(client) < Decimal(3)
    assert prices.delete_price(admin_ctx, "gpt-4o-mini") is False
    assert len(audits(admin_ctx, "price.delete")) == 1

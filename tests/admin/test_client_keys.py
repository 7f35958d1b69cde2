"""Client key commands: create and revoke reach the proxy at once; the one top-up rule
refuses what it must, naming `amount`; each change is audited once."""

from __future__ import annotations

import openai
import pytest

from gateway.admin import client_keys, provider_keys
from gateway.admin.errors import InputError
from gateway.keys import client_keys as clientkeys
from gateway.keys import provider_keys as keyring
from tests.admin.conftest import audits
from tests.conftest import chat


@pytest.fixture
def sdk(server):
    """An OpenAI SDK for a client key: sdk(key)."""
    made = []

    def make(key: str) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0))
        return made[-1]

    yield make
    for client in made:
        client.close()


def _provider_key(ctx, fake) -> None:
    body = {"provider": "openai", "name": "up", "secret": "sk-up", "base_url": fake.base_url}
    provider_keys.create(ctx, keyring.parse_key_input({**body, "models": "*"}, creating=True))


def _create(ctx, **fields):
    return client_keys.create(ctx, clientkeys.parse({"name": "app", **fields}, creating=True))


def test_a_new_key_works_at_once_and_a_revoked_one_is_refused_at_once(admin_ctx, fake, sdk):
    _provider_key(admin_ctx, fake)
    row, key = _create(admin_ctx)
    client = sdk(key)
    assert client.chat.completions.create(**chat()).choices
    client_keys.revoke(admin_ctx, row)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**chat())
    [made] = audits(admin_ctx, "client_key.create")
    assert made.detail == {"name": "app", "profile": "default"}
    assert len(audits(admin_ctx, "client_key.revoke")) == 1


def test_an_unknown_profile_is_named(admin_ctx):
    with pytest.raises(InputError) as refused:
        _create(admin_ctx, profile="nowhere")
    assert refused.value.field == "profile" and refused.value.status == 404


@pytest.mark.parametrize(
    ("budget", "amount", "status", "says"),
    [
        ("1.00", "lots", 400, "amount"),
        ("1.00", "0", 400, "positive amount"),
        ("1.00", "-3", 400, "amount"),
        (None, "5", 409, "no budget to top up"),
    ],
)
def test_a_top_up_that_cannot_be_made_names_amount(admin_ctx, budget, amount, status, says):
    row, _ = _create(admin_ctx, **({"max_budget": budget} if budget else {}))
    with pytest.raises(InputError) as refused:
        client_keys.top_up(admin_ctx, row, amount)
    assert refused.value.field == "amount" and refused.value.status == status
    assert says in str(refused.value)
    assert audits(admin_ctx, "client_key.topup") == []


def test_a_top_up_raises_the_budget_and_is_audited_once(admin_ctx):
    row, _ = _create(admin_ctx, max_budget="1.00")
    assert client_keys.top_up(admin_ctx, row, "2.50") == 2_500_000
    assert row.to_dict(admin_ctx.now())["max_budget"] == "3.500000"
    [entry] = audits(admin_ctx, "client_key.topup")
    assert entry.detail["amount"] == "2.500000" and entry.detail["reference"].startswith("admin-")

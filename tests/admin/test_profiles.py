"""Profile and route commands: bad names are named, a new route serves the next request,
each change is audited once."""

from __future__ import annotations

import openai
import pytest

from gateway import routes
from gateway.admin import profiles, provider_keys
from gateway.admin.errors import InputError
from gateway.keys import provider_keys as keyring
from tests.admin.conftest import audits
from tests.conftest import chat


@pytest.mark.parametrize(("name", "says"), [("no spaces", "letters"), ("default", "exists")])
def test_a_profile_name_that_cannot_be_saved_is_named(admin_ctx, name, says):
    with pytest.raises(InputError) as refused:
        profiles.create_profile(admin_ctx, name, {})
    assert refused.value.field == "name" and says in str(refused.value)


def test_profile_settings_are_audited_once_each(admin_ctx):
    profile = profiles.put_profile(admin_ctx, "team", {"strategy": "round_robin"})
    assert profile.strategy == "round_robin"
    profiles.update_profile(admin_ctx, profile, {"wait_for_key_seconds": 3})
    assert [e.detail for e in audits(admin_ctx, "profile.update")] == [
        {"strategy": "round_robin"},
        {"wait_for_key_seconds": 3},
    ]
    with pytest.raises(InputError) as refused:
        profiles.put_profile(admin_ctx, "bad name", {})
    assert refused.value.field == "name"


def test_a_route_serves_the_next_request_and_its_removal_too(admin_ctx, fake, client):
    body = {"provider": "openai", "name": "up", "secret": "sk-up", "base_url": fake.base_url}
    models = "gpt-4o-mini,gpt-4o"
    provider_keys.create(admin_ctx, keyring.parse_key_input({**body, "models": models}, True))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(**chat(model="smart"))
    values = routes.parse({"name": "smart", "target": "gpt-4o"}, creating=True)
    route = profiles.create_route(admin_ctx, values)
    assert client.chat.completions.create(**chat(model="smart")).choices
    assert fake.requests[-1].body["model"] == "gpt-4o"
    profiles.delete_route(admin_ctx, route)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(**chat(model="smart"))
    assert len(audits(admin_ctx, "route.create")) == len(audits(admin_ctx, "route.delete")) == 1


def test_a_route_named_twice_is_refused_naming_it(admin_ctx):
    values = routes.parse({"name": "smart", "target": "gpt-4o"}, creating=True)
    profiles.create_route(admin_ctx, values)
    with pytest.raises(InputError) as refused:
        profiles.create_route(admin_ctx, values)
    assert refused.value.field == "name"
    admin_ctx.session.rollback()
    assert len(audits(admin_ctx, "route.create")) == 1

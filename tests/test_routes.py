"""Routes (F20, F25, F26): aliases, prefix patterns, fallback chains to other models,
paid-model gating, and the environment fallback key."""

from __future__ import annotations

import openai
import pytest

from gateway.routes import RouteTable, _Entry
from tests.conftest import MASTER_KEY, Admin, chat, live_app
from tests.fake_upstream import Behaviour

MINI = "sk-route-mini-aaaaaaaaaaaa1111"
BIG = "sk-route-big-bbbbbbbbbbbbb2222"
ENV = "sk-route-env-cccccccccccc3333"


def models_asked(fake, secret: str) -> list[str]:
    return [r.body["model"] for r in fake.requests_for(secret) if r.path.endswith("/completions")]


def test_route_table_resolves_aliases_patterns_and_paid_models():
    table = RouteTable(
        [
            _Entry("smart", "gpt-4o", ("cheap", "claude-3"), False),
            _Entry("cheap", "gpt-4o-mini", (), False),
            _Entry("gpt-4o", None, (), True),
            _Entry("or/*", "*", (), False),
            _Entry("or/anthropic/*", "claude-*", (), True),
        ]
    )
    assert table.chain("smart", paid_allowed=True) == ["gpt-4o", "gpt-4o-mini", "claude-3"]
    # `smart` is not paid; its target gpt-4o is, through its own route, and leaves the chain.
    assert table.chain("smart", paid_allowed=False) == ["gpt-4o-mini", "claude-3"]
    assert table.chain("or/llama-3", paid_allowed=True) == ["llama-3"]
    assert table.chain("or/anthropic/sonnet", paid_allowed=True) == ["claude-sonnet"]  # longest
    assert table.chain("unrouted", paid_allowed=False) == ["unrouted"]
    assert table.aliases() == ["cheap", "smart"]


def test_paid_hops_leave_the_chain_when_paid_models_are_off():
    table = RouteTable(
        [
            _Entry("smart", "gpt-4o", ("gpt-4o-mini",), True),
            _Entry("gpt-4o-mini", None, (), False),
            _Entry("premium", "o1", (), True),
        ]
    )
    assert table.chain("smart", paid_allowed=True) == ["gpt-4o", "gpt-4o-mini"]
    assert table.chain("smart", paid_allowed=False) == ["gpt-4o-mini"]
    with pytest.raises(Exception) as err:
        table.chain("premium", paid_allowed=False)
    assert err.value.status == 403 and err.value.code == "paid_model_disabled"


@pytest.mark.both_databases
def test_an_alias_is_served_by_its_target_and_listed(admin, fake, client):
    admin.add_key(MINI, fake.base_url, models=["gpt-4o-mini"])
    made = admin.call("POST", "/routes", {"name": "fast", "target": "gpt-4o-mini"})
    assert made.status == 201 and made.json()["target"] == "gpt-4o-mini"
    answer = client.chat.completions.with_raw_response.create(**chat(model="fast"))
    assert answer.parse().choices[0].message.content
    assert models_asked(fake, MINI) == ["gpt-4o-mini"]  # the upstream got the real model
    listed = [m.id for m in client.models.list().data]
    assert "fast" in listed and "gpt-4o-mini" in listed
    log = admin.logs()[0]
    assert log["model"] == "gpt-4o-mini"  # the model that was served (and priced)
    assert log["requested_model"] == "fast"  # and the one the client asked for


@pytest.mark.both_databases
def test_a_chain_falls_back_to_the_next_model(admin, fake, client):
    admin.add_key(BIG, fake.base_url, models=["gpt-4o"])
    admin.add_key(MINI, fake.base_url, models=["gpt-4o-mini"])
    body = {"name": "smart", "target": "gpt-4o", "fallbacks": ["gpt-4o-mini"]}
    assert admin.call("POST", "/routes", body).status == 201
    fake.set_behaviour(BIG, Behaviour.server_error(503))  # the primary's only key fails
    answer = client.chat.completions.create(**chat(model="smart"))
    assert answer.choices[0].message.content
    assert models_asked(fake, BIG) == ["gpt-4o"] and models_asked(fake, MINI) == ["gpt-4o-mini"]
    # Streams fall back the same way (before their first byte).
    stream = client.chat.completions.create(**chat(model="smart"), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    # A client error is the client's: no fallback.
    fake.set_behaviour(BIG, Behaviour.bad_request())
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(**chat(model="smart"))
    assert len(models_asked(fake, MINI)) == 2


def test_a_model_without_keys_falls_back_too(admin, fake, client):
    admin.add_key(MINI, fake.base_url, models=["gpt-4o-mini"])
    body = {"name": "gpt-4o", "fallbacks": ["gpt-4o-mini"]}
    assert admin.call("POST", "/routes", body).status == 201
    client.chat.completions.create(**chat(model="gpt-4o"))
    assert models_asked(fake, MINI) == ["gpt-4o-mini"]


def test_paid_models_follow_the_setting_and_the_profile(admin, fake, client):
    admin.add_key(BIG, fake.base_url, models=["gpt-4o"])
    admin.add_key(MINI, fake.base_url, models=["gpt-4o-mini"])
    admin.call("POST", "/routes", {"name": "gpt-4o", "paid": True, "fallbacks": ["gpt-4o-mini"]})
    client.chat.completions.create(**chat(model="gpt-4o"))  # paid models on by default
    assert models_asked(fake, BIG) == ["gpt-4o"]
    admin.call("PUT", "/profiles/default", {"use_paid_models": False})
    client.chat.completions.create(**chat(model="gpt-4o"))
    assert models_asked(fake, BIG) == ["gpt-4o"] and models_asked(fake, MINI) == ["gpt-4o-mini"]
    admin.call("PUT", "/routes/1", {"fallbacks": []})
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(**chat(model="gpt-4o"))
    assert err.value.code == "paid_model_disabled"


def test_route_input_is_checked(admin):
    assert admin.call("POST", "/routes", {"name": "a", "target": "b"}).status == 201
    for body, field in [
        ({"target": "x"}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "c", "target": "d*"}, "target"),
        ({"name": "c", "fallbacks": "x,y,z,u,v,w"}, "fallbacks"),
        ({"name": "c", "paid": "yes"}, "paid"),
        ({"name": "c", "colour": "red"}, "colour"),
    ]:
        response = admin.call("POST", "/routes", body)
        assert response.status == 400 and response.json()["error"]["param"] == field, body
    taken = admin.call("POST", "/routes", {"name": "a"})
    assert taken.status == 409
    assert admin.call("DELETE", "/routes/1").status == 204
    assert admin.call("GET", "/routes/1").status == 404


@pytest.fixture
def with_env_key(settings, fake):
    with live_app(settings, FALLBACK_KEY=ENV, FALLBACK_BASE_URL=fake.base_url) as served:
        yield served


def test_the_environment_key_serves_only_when_the_pool_has_none(with_env_key, fake, http):
    app, live = with_env_key
    admin = Admin(live.url, http)
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=MASTER_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(**chat())
    assert raw.parse().choices[0].message.content  # no key in the pool: the env key
    assert len(models_asked(fake, ENV)) == 1
    key = admin.add_key(MINI, fake.base_url)
    client.chat.completions.create(**chat())
    assert len(models_asked(fake, MINI)) == 1 and len(models_asked(fake, ENV)) == 1
    admin.call("POST", f"/keys/{key['id']}/toggle", {"active": False})
    client.chat.completions.create(**chat())
    assert len(models_asked(fake, ENV)) == 2
    log = admin.logs()[0]
    assert log["provider_key_id"] is None and log["status_code"] == 200
    assert ENV not in str(admin.call("GET", "/logs").data)  # the secret is never shown
    client.close()


def test_strategy_and_overflow_fields_are_checked(admin):
    made = admin.call(
        "POST",
        "/routes",
        {"name": "long", "target": "gpt-4o-mini", "fallbacks": ["gpt-4o"],
         "strategy": "round-robin", "on_context_overflow": "fallback"},
    )  # fmt: skip
    assert made.status == 201, made.data
    route = made.json()
    assert (route["strategy"], route["on_context_overflow"], route["context_window"]) == (
        "round-robin",
        "fallback",
        None,
    )
    for body, field, words in [
        ({"strategy": "fastest"}, "strategy", "most-remaining, round-robin"),
        ({"strategy": 3}, "strategy", "must be one of"),
        ({"on_context_overflow": "shrink"}, "on_context_overflow", "error, fallback, prune"),
        ({"context_window": 0}, "context_window", "between 1 and"),
        ({"context_window": "lots"}, "context_window", "whole number"),
        ({"context_window": True}, "context_window", "whole number"),
        # fallback needs models to fall back to: a clash with the saved route's mode
        ({"fallbacks": []}, "on_context_overflow", "give the route fallbacks"),
    ]:
        response = admin.call("PUT", f"/routes/{route['id']}", body)
        assert response.status == (409 if "fallbacks" in body else 400), body
        error = response.json()["error"]
        assert error["param"] == field and words in error["message"], (body, error)
    assert admin.call("GET", f"/routes/{route['id']}").json() == route  # nothing changed
    changed = admin.call(
        "PUT",
        f"/routes/{route['id']}",
        {"on_context_overflow": "prune", "context_window": 8192, "strategy": None},
    )
    assert changed.status == 200
    # "" is how a form says "unset"; the JSON API says null (its document has no "").
    blank = admin.call("PUT", f"/routes/{route['id']}", {"strategy": ""})
    assert blank.status == 400 and blank.json()["error"]["param"] == "strategy"
    assert changed.json()["on_context_overflow"] == "prune"
    assert (changed.json()["context_window"], changed.json()["strategy"]) == (8192, None)
    alone = admin.call("POST", "/routes", {"name": "solo", "on_context_overflow": "fallback"})
    assert alone.status == 400 and alone.json()["error"]["param"] == "on_context_overflow"
    assert [r["name"] for r in admin.call("GET", "/routes").json()["data"]] == ["long"]


@pytest.mark.both_databases
def test_the_routes_page_takes_strategy_and_overflow(web):
    refused = web.post(
        "/routes", {"name": "long", "target": "gpt-4o", "context_window": "big", "strategy": ""}
    )
    assert refused.status_code == 422
    assert "&#39;context_window&#39; must be a whole number." in refused.text
    refused = web.post("/routes", {"name": "long", "on_context_overflow": "fallback"})
    assert refused.status_code == 422 and "give the route fallbacks" in refused.text
    added = web.post(
        "/routes",
        {"name": "long", "target": "gpt-4o-mini", "fallbacks": "gpt-4o", "strategy": "priority",
         "on_context_overflow": "prune", "context_window": "16000"},
    )  # fmt: skip
    assert added.status_code == 302
    page = web.get("/routes").text
    row = page[page.index('data-route="long"') :].split("</tr>")[0]
    assert "priority" in row and "prune (16,000 tokens)" in row
    assert '<option value="least-busy"' in page and '<option value="prune"' in page

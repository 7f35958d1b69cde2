"""The admin JSON API: key CRUD with masked secrets, test, toggle, logs, stats, auth."""

from __future__ import annotations

import sqlite3

import openai
import pytest

from tests.conftest import MASTER_KEY, chat
from tests.fake_upstream import Behaviour

SECRET = "sk-or-v1-1234567890abcdef1234567890abcd"


@pytest.mark.sqlite_only  # reads the SQLite file
def test_create_masks_the_secret_and_stores_it_encrypted(admin, fake, app):
    key = admin.add_key(
        SECRET,
        fake.base_url,
        profile="team-a",
        models=["gpt-4o"],
        daily_token_limit=1000,
        name="main",
    )
    assert key["secret"] == "sk-or-v1-1234…abcd"
    assert key["profile"] == "team-a" and key["models"] == ["gpt-4o"]
    assert key["daily_token_limit"] == 1000 and key["remaining_today"] == 1000
    assert key["status"] == "active"
    database = app.instance_path + "/keyrelay.db"
    with open(database, "rb") as handle:
        assert SECRET.encode() not in handle.read()


def test_secret_never_comes_back(admin, fake):
    key = admin.add_key(SECRET, fake.base_url)
    responses = [
        admin.call("GET", "/keys"),
        admin.call("GET", f"/keys/{key['id']}"),
        admin.call("PUT", f"/keys/{key['id']}", {"name": "renamed"}),
        admin.call("POST", f"/keys/{key['id']}/test"),
        admin.call("POST", f"/keys/{key['id']}/toggle"),
    ]
    for response in responses:
        assert response.status == 200
        assert SECRET not in response.data.decode()


@pytest.mark.both_databases
def test_update_changes_only_given_fields(admin, fake):
    key = admin.add_key(SECRET, fake.base_url, daily_token_limit=50)
    updated = admin.call("PUT", f"/keys/{key['id']}", {"models": "gpt-4o, gpt-4o-mini"}).json()
    assert updated["models"] == ["gpt-4o", "gpt-4o-mini"]
    assert updated["daily_token_limit"] == 50
    cleared = admin.call("PUT", f"/keys/{key['id']}", {"daily_token_limit": None}).json()
    assert cleared["daily_token_limit"] is None


@pytest.mark.both_databases
def test_new_secret_replaces_the_old(admin, fake, client):
    key = admin.add_key(SECRET, fake.base_url)
    admin.call("PUT", f"/keys/{key['id']}", {"secret": "sk-new-secret-0000000000000"})
    client.chat.completions.create(**chat())
    assert fake.requests[0].secret == "sk-new-secret-0000000000000"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"provider": "openai", "secret": "sk-x-000000000000"}, "name"),
        ({"provider": "openai", "name": "n"}, "secret"),
        ({"name": "n", "secret": "sk-x-000000000000"}, "provider"),
        ({"provider": "nope", "name": "n", "secret": "s"}, "provider"),
        ({"provider": "openai", "name": "n", "secret": "s", "base_url": "ftp://x"}, "base_url"),
        (
            {"provider": "openai", "name": "n", "secret": "s", "daily_token_limit": -5},
            "daily_token_limit",
        ),
        ({"provider": "openai", "name": "n", "secret": "s", "models": 7}, "models"),
        ({"provider": "openai", "name": "n", "secret": "s", "profile": "bad name!"}, "profile"),
        ({"provider": "openai", "name": "n", "secret": "has space"}, "secret"),
        ({"provider": "openai", "name": "n", "secret": "s", "options": [1]}, "options"),
        ({"provider": "openai", "name": "n", "secret": "s", "options": {"x": 1}}, "options.x"),
    ],
)
def test_bad_key_input_names_the_field(admin, body, param):
    response = admin.call("POST", "/keys", body)
    assert response.status == 400
    assert response.json()["error"]["param"] == param
    assert admin.call("GET", "/keys").json()["data"] == []


def test_body_that_is_not_json_is_400(admin):
    response = admin.call("POST", "/keys", raw=b"{oops")
    assert response.status == 400
    assert response.json()["error"]["param"] == "body"


@pytest.mark.both_databases
def test_duplicate_secret_in_a_profile_is_409(admin, fake):
    admin.add_key(SECRET, fake.base_url)
    response = admin.call(
        "POST",
        "/keys",
        {"provider": "openai", "name": "again", "secret": SECRET, "base_url": fake.base_url},
    )
    assert response.status == 409
    assert SECRET not in response.data.decode()


def test_delete_and_404(admin, fake):
    key = admin.add_key(SECRET, fake.base_url)
    assert admin.call("DELETE", f"/keys/{key['id']}").status == 204
    response = admin.call("GET", f"/keys/{key['id']}")
    assert response.status == 404
    assert "No provider key" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("behaviour", "result", "status"),
    [
        (Behaviour.ok(), "ok", "active"),
        (Behaviour.unauthorized(), "auth_failed", "auth_failed"),
        (Behaviour.rate_limited(retry_after=5), "rate_limited", "active"),
        (Behaviour.server_error(), "error", "active"),
    ],
)
def test_key_test_reports_and_updates_status(admin, fake, behaviour, result, status):
    key = admin.add_key(SECRET, fake.base_url)
    fake.set_behaviour(SECRET, behaviour)
    outcome = admin.call("POST", f"/keys/{key['id']}/test").json()
    assert outcome["result"] == result
    assert outcome["key"]["status"] == status
    if result == "ok":
        assert outcome["models"] == ["gpt-4o", "gpt-4o-mini"]
    assert fake.requests[0].path == "/v1/models"


def test_key_test_reports_unreachable(admin):
    key = admin.add_key(SECRET, "http://127.0.0.1:9/v1")
    outcome = admin.call("POST", f"/keys/{key['id']}/test").json()
    assert outcome["result"] == "unreachable"


@pytest.mark.both_databases
def test_a_passing_test_restores_an_auth_failed_key(admin, fake, client):
    key = admin.add_key(SECRET, fake.base_url)
    fake.set_behaviour(SECRET, Behaviour.unauthorized())
    admin.call("POST", f"/keys/{key['id']}/test")
    assert admin.key(key["id"])["status"] == "auth_failed"
    fake.reset()
    admin.call("POST", f"/keys/{key['id']}/test")
    assert admin.key(key["id"])["status"] == "active"


def test_toggle_disables_and_enables(admin, fake, client):
    key = admin.add_key(SECRET, fake.base_url)
    assert admin.call("POST", f"/keys/{key['id']}/toggle").json()["status"] == "disabled"
    with pytest.raises(Exception) as err:
        client.chat.completions.create(**chat())
    assert "1 key disabled" in str(err.value)
    body = {"active": True}
    assert admin.call("POST", f"/keys/{key['id']}/toggle", body).json()["status"] == "active"
    client.chat.completions.create(**chat())
    bad = admin.call("POST", f"/keys/{key['id']}/toggle", {"active": "yes"})
    assert bad.status == 400


@pytest.mark.both_databases
def test_logs_and_stats_by_profile(admin, fake, client, server, http):
    admin.add_key(SECRET, fake.base_url)
    admin.add_key("sk-team-b-000000000000001", fake.base_url, profile="team-b")
    client.chat.completions.create(**chat())
    client.chat.completions.create(**chat())
    http.request(
        "POST",
        f"{server.url}/v1/chat/completions",
        json=chat(),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "X-Profile": "team-b"},
    )
    assert len(admin.logs()) == 3
    assert len(admin.logs(profile="team-b")) == 1
    assert len(admin.logs(limit=1, offset=1)) == 1
    totals = [u["total_tokens"] for u in fake.usage_reported]
    assert admin.stats()["all_time"]["total_tokens"] == sum(totals)
    team_b = admin.stats("team-b")
    assert team_b["profile"] == "team-b"
    assert team_b["today"]["requests"] == 1
    assert team_b["today"]["total_tokens"] == totals[2]
    assert admin.call("GET", "/stats?profile=ghost").status == 404
    assert admin.call("GET", "/logs?limit=0").status == 400


@pytest.mark.both_databases
def test_daily_limit_takes_a_key_out_until_the_next_day(admin, fake, client, clock):
    key = admin.add_key(SECRET, fake.base_url, daily_token_limit=10)
    client.chat.completions.create(**chat(content="a long enough prompt to pass ten tokens"))
    assert admin.key(key["id"])["status"] == "limit_reached"
    with pytest.raises(Exception) as err:
        client.chat.completions.create(**chat())
    assert "daily token limit" in str(err.value)
    clock.advance(days=1)
    assert admin.key(key["id"])["status"] == "active"
    client.chat.completions.create(**chat())


@pytest.mark.sqlite_only  # SQLite's write lock held from outside
def test_daily_limit_counts_bookings_not_yet_in_the_database(app, admin, fake, client):
    admin.add_key(SECRET, fake.base_url, daily_token_limit=10)
    db_path = app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")
    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # the writer cannot commit the first request
    try:
        client.chat.completions.create(**chat(content="a long enough prompt to pass ten tokens"))
        app.extensions["keyrelay"].keys.forget()  # as when the one-second snapshot expires
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(**chat())
        assert err.value.status_code == 503 and "daily token limit" in str(err.value)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert len(fake.requests) == 1


@pytest.mark.parametrize("key", [None, "wrong"])
def test_admin_api_needs_the_master_key(admin, key):
    response = admin.call("GET", "/keys", key=key)
    assert response.status == 401
    assert response.json()["error"]["type"] == "authentication_error"

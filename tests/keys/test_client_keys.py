"""Client keys (F31 identity and access, F8): created by an admin, shown once, stored
hashed, bound to a profile and optionally to models and an expiry, revocable."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

import openai
import pytest
from sqlalchemy import select

from extensions import db
from gateway.keys import client_keys as clientkeys
from models import AuditEntry, ClientKey
from tests.conftest import MODELS, chat, make_viewer

SECRET = "sk-ck-aaaaaaaaaaaaaaaa1111"
TEAM_SECRET = "sk-ck-team-bbbbbbbbbbbb2222"


@pytest.fixture
def pool(admin, fake):
    admin.add_key(SECRET, fake.base_url, name="default-key")
    admin.add_key(TEAM_SECRET, fake.base_url, name="team-key", profile="team-a")


def create(admin, **body) -> dict:
    response = admin.call("POST", "/client-keys", {"name": "app", **body})
    assert response.status == 201, response.data
    return response.json()


def sdk(server, key: str, **headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, max_retries=0, default_headers=headers
    )


@pytest.mark.sqlite_only  # reads the SQLite file (iterdump)
def test_the_key_is_answered_once_and_stored_hashed(admin, app, pool):
    created = create(admin, profile="team-a")
    key = created["key"]
    assert key.startswith("kr-") and len(key) >= 40
    assert created["key_hint"] == f"{key[:7]}…{key[-4:]}" and created["status"] == "active"
    listed = admin.call("GET", "/client-keys").json()["data"]
    one = admin.call("GET", f"/client-keys/{created['id']}").json()
    assert key not in str(listed) and key not in str(one) and "key" not in one
    with app.app_context():
        dump = "\n".join(db.session.connection().connection.iterdump())
        row = db.session.get(ClientKey, created["id"])
        assert row.key_hash == clientkeys.fingerprint(key)
    assert key not in dump


@pytest.mark.both_databases
def test_a_client_key_calls_its_own_profile(admin, server, fake, pool):
    key = create(admin, profile="team-a")["key"]
    reply = sdk(server, key).chat.completions.create(**chat())
    assert reply.choices[0].message.content
    assert fake.requests[-1].secret == TEAM_SECRET  # team-a's provider key served it
    [log] = admin.logs(limit=1)
    assert log["client_key_id"] == 1
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk(server, key, **{"X-Profile": "default"}).chat.completions.create(**chat())
    assert refused.value.body["code"] == "profile_not_allowed"
    # The same profile named explicitly is fine; the master key still picks any profile.
    sdk(server, key, **{"X-Profile": "team-a"}).chat.completions.create(**chat())


def test_allowed_models_are_enforced_and_listed(admin, server, pool):
    key = create(admin, models=["gpt-4o-mini"])["key"]
    client = sdk(server, key)
    client.chat.completions.create(**chat(model="gpt-4o-mini"))
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(**chat(model="gpt-4o"))
    assert refused.value.status_code == 403
    assert refused.value.body["code"] == "model_not_allowed"
    assert "Allowed: gpt-4o-mini" in refused.value.body["message"]
    admin.call("POST", "/keys/1/test")  # discovers the upstream's models for the listing
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    master = [m.id for m in sdk(server, "kr-test-master-key").models.list()]
    assert master == sorted(MODELS)
    statuses = [log["status_code"] for log in admin.logs()]
    assert statuses.count(403) == 1  # the refusal is in the request log


@pytest.mark.both_databases
def test_revoked_expired_and_unknown_keys_get_401(admin, server, pool, clock):
    revoked = create(admin)
    expiring = create(admin, expires_at="2026-11-23T13:00:00+00:00")
    sdk(server, revoked["key"]).chat.completions.create(**chat())
    answer = admin.call("POST", f"/client-keys/{revoked['id']}/revoke").json()
    assert answer["status"] == "revoked" and answer["revoked_at"]
    with pytest.raises(openai.AuthenticationError) as denied:
        sdk(server, revoked["key"]).chat.completions.create(**chat())
    assert denied.value.body["code"] == "api_key_revoked"
    sdk(server, expiring["key"]).chat.completions.create(**chat())
    clock.advance(hours=1)
    with pytest.raises(openai.AuthenticationError) as expired:
        sdk(server, expiring["key"]).chat.completions.create(**chat())
    assert expired.value.body["code"] == "api_key_expired"
    assert admin.call("GET", f"/client-keys/{expiring['id']}").json()["status"] == "expired"
    for token in ("kr-" + "x" * 43, "sk-something-else"):
        with pytest.raises(openai.AuthenticationError) as unknown:
            sdk(server, token).models.list()
        assert unknown.value.body["code"] == "invalid_api_key"


@pytest.mark.both_databases
def test_update_and_delete(admin, server, pool):
    created = create(admin)
    client = sdk(server, created["key"])
    changed = admin.call(
        "PUT", f"/client-keys/{created['id']}", {"models": ["gpt-4o"], "name": "renamed"}
    ).json()
    assert (changed["name"], changed["models"]) == ("renamed", ["gpt-4o"])
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(**chat(model="gpt-4o-mini"))
    moved = admin.call("PUT", f"/client-keys/{created['id']}", {"profile": "team-a", "models": "*"})
    assert moved.json()["profile"] == "team-a" and moved.json()["models"] is None
    client.chat.completions.create(**chat(model="gpt-4o-mini"))
    assert admin.call("DELETE", f"/client-keys/{created['id']}").status == 204
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**chat())
    assert admin.call("GET", f"/client-keys/{created['id']}").status == 404


@pytest.mark.parametrize(
    ("body", "status", "param", "message"),
    [
        ({}, 400, "name", "Missing required field 'name'."),
        ({"name": "x", "colour": "red"}, 400, "colour", "Unknown field 'colour'"),
        ({"name": "x", "expires_at": "2027-01-01T00:00"}, 400, "expires_at", "with a zone"),
        ({"name": "x", "expires_at": "2020-01-01T00:00Z"}, 400, "expires_at", "in the past"),
        ({"name": "x", "profile": "nope"}, 404, "profile", "Profile 'nope' does not exist."),
        ({"name": "x", "models": []}, 400, "models", "'models' is empty"),
    ],
)
def test_bad_input_names_the_field(admin, body, status, param, message):
    response = admin.call("POST", "/client-keys", body)
    assert response.status == status
    error = response.json()["error"]
    assert error["param"] == param and message in error["message"]


@pytest.mark.both_databases
def test_revocation_reaches_other_processes_within_the_cache_time(app, monkeypatch):
    """Another worker's cache: a revoked key keeps working there for at most a second."""
    # The cache's own clock, moved by the test: on a loaded machine the wall clock could
    # pass the cache time between two lines.
    monotonic = [1000.0]
    monkeypatch.setattr(clientkeys, "time", SimpleNamespace(monotonic=lambda: monotonic[0]))
    gateway = app.extensions["keyrelay"]
    with app.app_context():
        spec = clientkeys.parse({"name": "w"}, creating=True)
        row, key = clientkeys.create(db.session, spec, "test", gateway.clock.now())
        db.session.commit()
        other = clientkeys.Callers(db.engine, "master", gateway.clock)
        assert other.resolve(key).client_key_id == row.id
        clientkeys.revoke(row, gateway.clock.now())
        db.session.commit()
        monotonic[0] += clientkeys.CACHE_SECONDS - 0.01
        assert other.resolve(key).client_key_id == row.id  # still cached
        monotonic[0] += 0.02
        with pytest.raises(clientkeys.GatewayError) as denied:
            other.resolve(key)
    assert denied.value.code == "api_key_revoked"


@pytest.mark.both_databases
def test_dashboard_creates_shows_once_and_revokes(app, web, server, pool):
    page = web.post("/client-keys", {"name": "web-app", "profile": "team-a", "models": "*"})
    assert page.status_code == 302  # the key is shown on the page it leads to
    text = html.unescape(web.get(page.headers["Location"]).text)
    key = re.search(r'id="new-key-value" value="(kr-[^"]+)"', text).group(1)
    assert "it is shown this once" in text
    sdk(server, key).chat.completions.create(**chat())
    listing = web.get("/client-keys").text
    assert key not in listing and f"{key[:7]}…{key[-4:]}" in html.unescape(listing)
    assert 'data-client-key-id="1"' in listing
    assert "Revoke client key #1 web-app?" in web.get("/client-keys/1/revoke").text
    assert web.post("/client-keys/1/revoke").status_code == 302
    assert 'class="badge revoked"' in web.get("/client-keys").text
    with pytest.raises(openai.AuthenticationError):
        sdk(server, key).chat.completions.create(**chat())
    bad = web.post("/client-keys", {"name": "", "profile": "default"})
    assert bad.status_code == 422 and "Missing required field" in html.unescape(bad.text)
    garbled = web.post("/client-keys", {"name": "x", "expires_at": "soon"})
    assert re.search(r'name="expires_at" value="soon" aria-invalid="true">', garbled.text)
    past = web.post("/client-keys", {"name": "old", "expires_at": "2020-01-01T00:00"})
    assert "'expires_at' is in the past." in html.unescape(past.text)
    assert 'value="old"' in past.text
    viewer = make_viewer(app)
    assert "New client key" not in viewer.get("/client-keys").text
    assert viewer.post("/client-keys", {"name": "nope"}).status_code == 403
    with app.app_context():
        actions = set(db.session.scalars(select(AuditEntry.action)))
    assert {"client_key.create", "client_key.revoke"} <= actions

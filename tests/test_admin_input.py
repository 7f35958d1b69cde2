"""Admin input that once became a 500 later: a secret that cannot go in an HTTP header, a
base_url Python cannot parse, a YAML date that does not exist. Refused where it is entered
(admin API 400, dashboard form message); one already stored fails over to another key."""

from __future__ import annotations

import html

from sqlalchemy import update

from extensions import db
from models.provider_keys import ProviderKey
from tests.conftest import MASTER_KEY, chat

SECRET = "sk-admin-input-aaaaaaaaaaaa"
SPARE = "sk-admin-input-bbbbbbbbbbbb"
PASTED = "sk-admin-input-aaaa…"  # a console's ellipsis pasted with the key


def _key(fake, **fields) -> dict:
    return {
        "provider": "openai",
        "name": "k",
        "secret": SECRET,
        "base_url": fake.base_url,
        **fields,
    }


def test_a_secret_outside_ascii_is_refused_on_create_and_update(admin, fake):
    for secret in (PASTED, "sk-\u201cquoted\u201d", "sk-a\x00b", "sk-a\r\nX-Evil: 1"):
        refused = admin.call("POST", "/keys", _key(fake, secret=secret))
        assert refused.status == 400, (secret, refused.data)
        error = refused.json()["error"]
        assert error["param"] == "secret"
        assert secret not in error["message"]
    assert (
        "U+2026"
        in admin.call("POST", "/keys", _key(fake, secret=PASTED)).json()["error"]["message"]
    )
    created = admin.add_key(SECRET, fake.base_url)
    updated = admin.call("PUT", f"/keys/{created['id']}", {"secret": PASTED})
    assert updated.status == 400 and updated.json()["error"]["param"] == "secret"


def test_surrounding_whitespace_is_dropped_from_a_secret(admin, fake, client):
    created = admin.call("POST", "/keys", _key(fake, secret=f"  {SECRET}\r\n"))
    assert created.status == 201, created.data
    client.chat.completions.create(**chat())
    # The upstream got the key without the spaces: its test on creation, then the chat.
    paths = [r.path for r in fake.requests_for(SECRET)]
    assert paths == ["/v1/models", "/v1/chat/completions"]


def test_an_unparsable_base_url_is_refused(admin, fake):
    for url in ("http://[::1", "http://host:99999/v1", "http://exa mple.com/v1"):
        refused = admin.call("POST", "/keys", _key(fake, base_url=url))
        assert refused.status == 400, (url, refused.data)
        assert refused.json()["error"]["param"] == "base_url"
    created = admin.add_key(SECRET, fake.base_url)
    updated = admin.call("PUT", f"/keys/{created['id']}", {"base_url": "http://[::1"})
    assert updated.status == 400 and updated.json()["error"]["param"] == "base_url"


def _store(app, key_id: int, **values) -> None:
    """Write a key's columns as an older version could have saved them (no checks)."""
    with app.app_context():
        db.session.execute(update(ProviderKey).where(ProviderKey.id == key_id).values(**values))
        db.session.commit()
    app.extensions["keyrelay"].keys.forget()


def test_a_stored_unsendable_secret_fails_its_key_not_the_server(app, admin, fake, http, server):
    """A secret saved before these checks: its key fails (auth, taken out of the pool, the
    secret not quoted), the request is a gateway error, and another key then answers."""
    bad = admin.add_key(SECRET, fake.base_url, name="bad")
    _store(app, bad["id"], secret_encrypted=app.extensions["keyrelay"].secrets.encrypt(PASTED))
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    failed = http.request("POST", f"{server.url}/v1/chat/completions", json=chat(), headers=headers)
    assert failed.status in (502, 503), failed.data
    assert failed.json()["error"]["message"] and PASTED.encode() not in failed.data
    assert admin.key(bad["id"])["status"] == "auth_failed"
    admin.add_key(SPARE, fake.base_url, name="good")
    answered = http.request(
        "POST", f"{server.url}/v1/chat/completions", json=chat(), headers=headers
    )
    assert answered.status == 200, answered.data


def test_a_stored_unparsable_base_url_fails_its_key_not_the_server(app, admin, fake, http, server):
    bad = admin.add_key(SECRET, fake.base_url, name="bad")
    _store(app, bad["id"], base_url="http://[::1")
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    failed = http.request("POST", f"{server.url}/v1/chat/completions", json=chat(), headers=headers)
    assert failed.status in (502, 503), failed.data
    assert failed.json()["error"]["message"]


def test_dashboard_key_form_explains_a_bad_secret_or_url(web, fake):
    data = {
        "name": "main",
        "provider": "openai",
        "profile": "default",
        "secret": PASTED,
        "base_url": fake.base_url,
        "models": "*",
    }
    page = web.post("/keys", data)
    assert page.status_code == 422, page.status_code
    assert "U+2026" in html.unescape(page.text)
    page = web.post("/keys", {**data, "secret": SECRET, "base_url": "http://[::1"})
    assert page.status_code == 422
    assert "not a valid URL" in html.unescape(page.text)


def test_a_date_that_does_not_exist_in_a_config_file_is_a_form_error(web):
    for kind, text in (
        ("limits", "keys:\n  - id: 1\n    expires_at: 2026-13-45\n"),
        ("models", "routes:\n  - name: x\n    target: 2026-02-30\n"),
    ):
        page = web.post("/config/import", {"kind": kind, "text": text, "action": "check"})
        assert page.status_code == 422, (kind, page.status_code)
        assert "month must be in 1..12" in page.text or "day is out of range" in page.text
        assert "YYYY-MM-DD" in page.text


def test_a_405_names_the_allowed_methods(admin, http, server):
    """RFC 9110: a 405 carries Allow (schemathesis's undeclared-method check)."""
    answer = admin.call("TRACE", "/stats")
    assert answer.status == 405 and answer.json()["error"]["code"] == "method_not_allowed"
    assert set(answer.headers["Allow"].replace(" ", "").split(",")) >= {"GET"}
    assert "POST" not in answer.headers["Allow"]
    page = http.request("DELETE", f"{server.url}/login")
    assert page.status == 405 and "POST" in page.headers["Allow"]

"""Edit in place on the dashboard: client keys and routes are changed through forms filled
with what is saved (never a secret), checked as on create; the default provider key is set
and marked; every form reports all its bad fields at once, the admin API too; a new
client key is shown once, on the page a redirect leads to."""

from __future__ import annotations

import html
import re

import openai
import pytest
from sqlalchemy import func, select

from extensions import db
from models import AuditEntry, ClientKey, Route
from tests.conftest import chat

KEY_SHOWN = re.compile(r'id="new-key-value" value="(kr-[^"]+)"')


def _text(response) -> str:
    return html.unescape(response.text)


def _errors(page: str) -> dict[str, str]:
    """{field: message} of the field errors a page shows."""
    found = re.findall(r'<span class="field-error" id="([\w.]+)-error" role="alert">([^<]+)<', page)
    return dict(found)


def _count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def _sdk(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def _new_client_key(web, **fields) -> str:
    form = {"name": "app", "profile": "default", "models": "*", **fields}
    created = web.post("/client-keys", form)
    assert created.status_code == 302
    return KEY_SHOWN.search(_text(web.get(created.headers["Location"]))).group(1)


@pytest.mark.both_databases
def test_a_reload_after_key_created_shows_nothing_and_creates_nothing(
    app, web, server, admin, fake
):
    admin.add_key("sk-edit-aaaaaaaaaaaa1111", fake.base_url)
    key = _new_client_key(web)
    assert _count(app, ClientKey) == 1
    again = web.get("/client-keys")  # what a reload of the page after the redirect does
    assert key not in again.text and KEY_SHOWN.search(again.text) is None
    assert _count(app, ClientKey) == 1
    assert _sdk(server, key).chat.completions.create(**chat()).choices[0].message.content


@pytest.mark.both_databases
def test_a_client_key_is_edited_in_place_and_the_proxy_sees_it_at_once(
    app, web, server, admin, fake
):
    admin.add_key("sk-edit-aaaaaaaaaaaa1111", fake.base_url)
    key = _new_client_key(web, rpm_limit="100", max_budget="5", budget_duration="1d")
    assert _sdk(server, key).chat.completions.create(**chat("gpt-4o-mini")).choices
    form = _text(web.get("/client-keys/1/edit"))
    assert key not in form and 'name="name" value="app"' in form
    assert 'name="rpm_limit" value="100"' in form and 'name="max_budget" value="5"' in form
    assert re.search(r"<option selected>1d</option>", form)
    saved = web.post(
        "/client-keys/1/edit",
        {"name": "app-two", "profile": "default", "models": "gpt-4o", "rpm_limit": "7",
         "tpm_limit": "", "max_parallel_requests": "2", "max_budget": "9.5",
         "budget_duration": "30d", "expires_at": "2099-01-31T18:00"},
    )  # fmt: skip
    assert saved.status_code == 302
    shown = admin.call("GET", "/client-keys/1").json()
    assert (shown["name"], shown["models"], shown["rpm_limit"]) == ("app-two", ["gpt-4o"], 7)
    assert (shown["tpm_limit"], shown["max_parallel_requests"]) == (None, 2)
    assert (shown["max_budget"], shown["budget_duration"]) == ("9.500000", "30d")
    assert shown["expires_at"].startswith("2099-01-31")
    with pytest.raises(openai.PermissionDeniedError):  # only gpt-4o now, at once
        _sdk(server, key).chat.completions.create(**chat("gpt-4o-mini"))
    with app.app_context():
        updates = db.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "client_key.update")
        ).all()
    assert len(updates) == 1 and "rpm_limit" in updates[0].detail["fields"]
    listing = _text(web.get("/client-keys"))
    assert "Saved client key #1 app-two." in listing and key not in listing


def test_a_bad_client_key_edit_names_every_field_and_keeps_what_was_typed(web, admin):
    _new_client_key(web)
    refused = web.post(
        "/client-keys/1/edit",
        {"name": "", "profile": "default", "rpm_limit": "-1", "max_budget": "-3",
         "budget_duration": "fortnight", "expires_at": "soon"},
    )  # fmt: skip
    assert refused.status_code == 422
    errors = _errors(_text(refused))
    assert set(errors) >= {"rpm_limit", "max_budget", "budget_duration", "expires_at"}
    assert 'name="rpm_limit" value="-1"' in refused.text
    assert 'name="max_budget" value="-3"' in refused.text
    assert admin.call("GET", "/client-keys/1").json()["name"] == "app"  # nothing changed


@pytest.mark.both_databases
def test_a_route_is_edited_in_place(app, web, admin):
    assert web.post("/routes", {"name": "smart", "target": "gpt-4o"}).status_code == 302
    form = _text(web.get("/routes/1/edit"))
    assert 'name="name" value="smart"' in form and 'name="target" value="gpt-4o"' in form
    saved = web.post(
        "/routes/1/edit",
        {"name": "smart", "target": "gpt-4o-mini", "fallbacks": "gpt-4o, gpt-4.1",
         "strategy": "priority", "on_context_overflow": "fallback", "context_window": "8000"},
    )  # fmt: skip
    assert saved.status_code == 302
    [route] = admin.call("GET", "/routes").json()["data"]
    assert (route["target"], route["fallbacks"]) == ("gpt-4o-mini", ["gpt-4o", "gpt-4.1"])
    assert (route["strategy"], route["on_context_overflow"]) == ("priority", "fallback")
    assert route["context_window"] == 8000
    refused = web.post(
        "/routes/1/edit",
        {"name": "smart", "target": "a*b*", "strategy": "loudest",
         "on_context_overflow": "shout", "context_window": "big"},
    )  # fmt: skip
    assert refused.status_code == 422
    errors = _errors(_text(refused))
    assert set(errors) == {"target", "strategy", "on_context_overflow", "context_window"}
    assert 'name="context_window" inputmode="numeric" value="big"' in refused.text
    assert _count(app, Route) == 1
    assert admin.call("GET", "/routes/1").json()["strategy"] == "priority"


def test_the_default_key_is_set_and_marked_on_the_keys_page(web, admin, fake):
    first = admin.add_key("sk-default-aaaaaaaaaaaa1111", fake.base_url, name="one")
    second = admin.add_key("sk-default-bbbbbbbbbbbb2222", fake.base_url, name="two")
    page = web.get("/keys").text
    assert "data-default" not in page
    assert web.post(f"/keys/{second['id']}/default").status_code == 302
    page = web.get("/keys").text
    assert re.findall(r'data-key-id="(\d+)"[^>]*>(?:(?!</tr>).)*data-default', page, re.S) == [
        str(second["id"])
    ]
    assert admin.key(second["id"])["is_default"] is True
    web.post(f"/keys/{first['id']}/default")
    assert admin.key(first["id"])["is_default"] is True
    assert admin.key(second["id"])["is_default"] is False


def test_the_key_form_names_a_bad_url_and_a_negative_amount_together(web, fake):
    refused = web.post(
        "/keys",
        {"name": "k", "provider": "openai", "profile": "default", "secret": "sk-x-aaaaaaaa1111",
         "base_url": "ftp://example.com/v1", "daily_cost_limit": "-3", "rpm_limit": "0",
         "model_limits": "gpt-4o"},
    )  # fmt: skip
    assert refused.status_code == 422
    errors = _errors(_text(refused))
    assert set(errors) == {"base_url", "daily_cost_limit", "rpm_limit", "model_limits"}
    assert "http(s) URL" in errors["base_url"] and "daily_cost_limit" in errors["daily_cost_limit"]
    assert 'value="ftp://example.com/v1"' in refused.text and 'value="-3"' in refused.text


@pytest.mark.parametrize(
    ("path", "form", "fields"),
    [
        ("/prices", {"model": "m", "input_per_mtok": "-1", "output_per_mtok": "lots"},
         {"input_per_mtok", "output_per_mtok"}),
        ("/users", {"username": " bad name", "password": "short", "role": "owner"},
         {"username", "password", "role"}),
        ("/profiles", {"name": "bad name!", "strategy": "loudest", "wait_for_key_seconds": "-4"},
         {"name", "strategy", "wait_for_key_seconds"}),
        ("/client-keys", {"name": "x", "rpm_limit": "0", "max_budget": "-3",
                          "expires_at": "2020-13-45T99:00"},
         {"rpm_limit", "max_budget", "expires_at"}),
        ("/routes", {"name": "", "strategy": "loudest", "context_window": "0"},
         {"name", "strategy", "context_window"}),
    ],
)  # fmt: skip
def test_every_form_names_all_its_bad_fields_at_once(web, path, form, fields):
    refused = web.post(path, form)
    assert refused.status_code == 422
    assert set(_errors(_text(refused))) == fields


def test_the_admin_api_lists_every_bad_field_too(admin):
    answer = admin.call(
        "POST",
        "/keys",
        {"name": "k", "provider": "openai", "secret": "sk-x-aaaaaaaa1111",
         "base_url": "ftp://example.com/v1", "daily_cost_limit": "-3"},
    )  # fmt: skip
    assert answer.status == 400
    error = answer.json()["error"]
    assert error["param"] == "daily_cost_limit"  # the first, as before
    assert [e["param"] for e in error["errors"]] == ["daily_cost_limit", "base_url"]
    client = admin.call("POST", "/client-keys", {"name": "c", "rpm_limit": 0, "max_budget": "-3"})
    assert client.status == 400
    assert {e["param"] for e in client.json()["error"]["errors"]} == {"rpm_limit", "max_budget"}


def test_the_rovodev_form_names_every_bad_field(web):
    form = {"profile": "default", "email": "nobody", "apiToken": "ATATT3xFfGF0edit-token-aaaa",
            "cloudId": "my-site", "dailyTokenLimit": "-3", "authScheme": "bearer",
            "baseUrl": "ftp://example.com"}  # fmt: skip
    refused = web.post("/rovodev", form)
    assert refused.status_code == 422
    assert set(_errors(_text(refused))) == {"email", "cloudId", "dailyTokenLimit", "baseUrl"}
    assert form["apiToken"] not in refused.text


def test_a_members_limits_form_says_every_bad_field(web, admin):
    from tests.members.conftest import new_member

    member = new_member(admin, "lim@example.com")
    refused = web.post(
        f"/members/{member['id']}/limits",
        {"budget": "-3", "budget_period": "fortnight", "rpm_limit": "0", "profile": "default"},
    )
    assert refused.status_code == 422
    text = _text(refused)
    assert "'budget'" in text and "'budget_period'" in text and "'rpm_limit'" in text

"""The admin API keeps to its OpenAPI document both ways: what the document forbids is a
400 naming the field (even where a parser would have tolerated it), what it allows is
taken, and a request that clashes with the saved object is a 409."""

from __future__ import annotations

import pytest

from tests.conftest import MASTER_KEY

SECRET = "sk-contract-aaaaaaaaaaaa"


@pytest.fixture
def seeded(admin, fake) -> dict:
    key = admin.add_key(SECRET, fake.base_url)
    client = admin.call("POST", "/client-keys", {"name": "app", "max_budget": "10"}).json()
    route = admin.call("POST", "/routes", {"name": "smart", "fallbacks": ["gpt-4o-mini"],
                                           "on_context_overflow": "fallback"}).json()  # fmt: skip
    return {"key": key["id"], "client": client["id"], "route": route["id"]}


# (method, path, body or None, query, the field the 400 names). Each one a parser took.
FORBIDDEN = [
    ("GET", "/keys", None, "profile=%0C", "profile"),
    ("GET", "/client-keys", None, "profile=", "profile"),
    ("GET", "/logs", None, "profile=%20", "profile"),
    ("GET", "/keys/active", None, "profile=", "profile"),
    ("GET", "/statistics", None, "from=1291-01-01", "from"),
    ("GET", "/prices/" + "m" * 129, None, "", "model"),
    ("PUT", "/profiles/-x", {}, "", "name"),
    ("POST", "/keys/sync", {}, "provider=%0C", "provider"),
    ("POST", "/keys/{key}/toggle", [None, None], "", "body"),
    ("POST", "/keys/{key}/toggle", "null", "", "body"),
    ("POST", "/routes", {"name": "r", "target": ""}, "", "target"),
    ("POST", "/routes", {"name": "r*", "target": "a*b*"}, "", "target"),
    ("POST", "/routes", {"name": "r", "strategy": 3}, "", "strategy"),
    ("PUT", "/routes/{route}", None, "", "body"),
    ("PUT", "/client-keys/{client}", {"profile": None}, "", "profile"),
    ("PUT", "/client-keys/{client}", {"budget_duration": ""}, "", "budget_duration"),
    ("PUT", "/client-keys/{client}", {"models": [" "]}, "", "models"),
    ("POST", "/client-keys/{client}/topup", {"amount": "10.00", "x": 1}, "", "x"),
    ("PUT", "/prices/gpt-4o", {"input_per_mtok": "1", "output_per_mtok": 0.5}, "",
     "output_per_mtok"),
    ("PUT", "/profiles/team", {"wait_for_key_seconds": "5"}, "", "wait_for_key_seconds"),
    ("POST", "/rovodev-keys", {"email": "a@b.co", "apiToken": "t", "baseUrl": None}, "", "baseUrl"),
    ("POST", "/rovodev-keys", {"email": "a@b.co", "apiToken": "t", "baseUrl": "cli://x"}, "",
     "baseUrl"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "query", "field"), FORBIDDEN)
def test_what_the_document_forbids_is_a_400_naming_the_field(
    admin, seeded, method, path, body, query, field
):
    url = path.format(**seeded) + (f"?{query}" if query else "")
    raw = body.encode() if isinstance(body, str) else None
    answer = admin.call(method, url, None if raw else body, raw=raw)
    assert answer.status == 400, (method, url, answer.data)
    error = answer.json()["error"]
    assert error["param"] == field and error["type"] == "invalid_request_error", error


# (method, path, body, query): valid by the document, once refused.
ALLOWED = [
    ("POST", "/keys", {"provider": "openai", "name": "v6", "secret": "sk-contract-v6",
                       "base_url": "http://[::1]:9/v1"}, ""),
    ("POST", "/keys", {"provider": "groq", "name": "big", "secret": "sk-contract-big",
                       "daily_cost_limit": "999999999.5"}, ""),
    ("POST", "/keys", {"provider": "codex_cli", "name": "cli", "secret": "sk-contract-cli",
                       "base_url": "cli://codex", "options": {"max_concurrency": 2}}, ""),
    ("GET", "/statistics", None, "from=2000-01-01&to=2026-11-23"),  # over ten years
    ("GET", "/statistics", None, "from=2999-01-01"),  # `to` follows a later `from`
    ("PUT", "/keys/{key}/toggle", None, ""),
    ("POST", "/rovodev-keys", {"email": "a@" + "b" * 200 + ".co", "apiToken": "tok"}, ""),
    ("PUT", "/prices/gpt-4o", {"input_per_mtok": "1000000", "output_per_mtok": 3}, ""),
    ("PUT", "/routes/{route}", {"fallbacks": ["gpt-4o"]}, ""),
    ("PUT", "/client-keys/{client}", {"models": "gpt-4o, gpt-4o-mini"}, ""),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "query"), ALLOWED)
def test_what_the_document_allows_is_taken(admin, seeded, method, path, body, query):
    url = path.format(**seeded) + (f"?{query}" if query else "")
    if method == "PUT" and url.endswith("/toggle"):
        method = "POST"  # no body: the key flips
    answer = admin.call(method, url, body)
    assert answer.status in (200, 201), (method, url, answer.data)


def test_a_clash_with_the_saved_object_is_a_409(admin, seeded, fake):
    no_budget = admin.call("POST", "/client-keys", {"name": "free"}).json()
    clashes = [
        ("POST", f"/client-keys/{no_budget['id']}/topup", {"amount": "5"}, "amount"),
        ("PUT", f"/keys/{seeded['key']}", {"base_url": "cli://codex"}, "base_url"),
        ("PUT", f"/keys/{seeded['key']}", {"provider": "claude_code"}, "base_url"),
        ("PUT", f"/keys/{seeded['key']}", {"options": {"x": 1}}, "options.x"),
        ("PUT", f"/routes/{seeded['route']}", {"fallbacks": []}, "on_context_overflow"),
        ("PUT", f"/routes/{seeded['route']}", {"target": "x*"}, "target"),
    ]
    for method, path, body, field in clashes:
        answer = admin.call(method, path, body)
        assert answer.status == 409, (path, body, answer.data)
        assert answer.json()["error"]["param"] == field, answer.json()
    key = admin.key(seeded["key"])
    assert (key["provider"], key["base_url"]) == ("openai", fake.base_url.rstrip("/"))


def test_a_pattern_route_may_get_a_star_target_on_its_own(admin):
    made = admin.call("POST", "/routes", {"name": "team-*"}).json()
    changed = admin.call("PUT", f"/routes/{made['id']}", {"target": "gpt-*"})
    assert changed.status == 200 and changed.json()["target"] == "gpt-*", changed.data


def test_an_account_named_after_a_long_email_takes_its_first_128_characters(admin):
    email = "someone@" + "x" * 190 + ".example"
    body = {"email": email, "apiToken": "tok-long", "test": False}  # not sent to RovoDev
    made = admin.call("POST", "/rovodev-keys", body)
    assert made.status == 201 and made.json()["name"] == email[:128]
    assert admin.call("GET", "/rovodev-keys", key=MASTER_KEY).json()["data"][0]["email"] == email

"""Every form of the dashboard and the member pages answers a successful POST with a
redirect (post/redirect/get), so reloading the page it leads to repeats nothing; the few
that answer with a page are listed in IDEMPOTENT with the reason sending them twice is
harmless. The list of POST routes comes from the app's url_map: a new form without a
case here fails the test."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from extensions import db
from models import ClientKey, Member, Profile, ProviderKey, Route, User
from models.members import MemberToken
from tests.conftest import ADMIN_PASSWORD, CSRF_FIELD
from tests.fake_rovodev import Account, FakeRovoDev
from tests.members.conftest import PASSWORD, new_member

BLUEPRINTS = (
    "dashboard", "dashboard_members", "rovodev", "portal", "member_credits", "playground",
)  # fmt: skip
ROVO_TOKEN = "ATATT3xFfGF0prg-rovodev-token-aaaaaaaa"
CLOUD = "a436116f-02ce-4520-8fbb-7301462a1674"

# POST routes that answer with a page, and why sending them again changes nothing.
IDEMPOTENT = {
    "dashboard.test_all_keys": "a key test measures the upstream again; it creates nothing",
    "dashboard.restore_keys": "re-tests failing keys again; a key already back stays back",
    "dashboard.import_keys": "the same secrets sent again are reported as duplicates, not added",
    "playground.send": "not a form: the page's script sends it and stays; a reload sends nothing",
}

# endpoint → (path, form, who): in this order, each on what the ones before made. `{x}`
# in a path is the newest id of that kind.
CASES = [
    ("dashboard.create_key", "/keys", "key_form", "admin"),
    ("dashboard.update_key", "/keys/{key}/edit", "key_form", "admin"),
    ("dashboard.test_key", "/keys/{key}/test", {}, "admin"),
    ("dashboard.toggle_key", "/keys/{key}/toggle", {}, "admin"),
    ("dashboard.set_default_key", "/keys/{key}/default", {}, "admin"),
    ("dashboard.batch_keys", "/keys/batch", {"action": "enable", "ids": "{key}"}, "admin"),
    ("dashboard.create_profile", "/profiles", {"name": "team", "strategy": "default"}, "admin"),
    ("dashboard.update_profile", "/profiles/{profile}", {"wait_for_key_seconds": "3"}, "admin"),
    ("dashboard.create_user", "/users",
     {"username": "olga", "password": "olga-pass-123", "role": "viewer"}, "admin"),
    ("dashboard.delete_user", "/users/{user}/delete", {}, "admin"),
    ("dashboard.create_client_key", "/client-keys",
     {"name": "app", "profile": "default", "max_budget": "5"}, "admin"),
    ("dashboard.update_client_key", "/client-keys/{client_key}/edit",
     {"name": "app2", "profile": "default", "models": "*", "max_budget": "6"}, "admin"),
    ("dashboard.top_up_client_key", "/client-keys/{client_key}/topup", {"amount": "1"}, "admin"),
    ("dashboard.revoke_client_key", "/client-keys/{client_key}/revoke", {}, "admin"),
    ("dashboard.set_price", "/prices",
     {"model": "m1", "input_per_mtok": "1", "output_per_mtok": "2"}, "admin"),
    ("dashboard.delete_price", "/prices/delete", {"model": "m1"}, "admin"),
    ("dashboard.create_route", "/routes", {"name": "smart", "target": "gpt-4o"}, "admin"),
    ("dashboard.update_route", "/routes/{route}/edit",
     {"name": "smart", "target": "gpt-4o-mini", "on_context_overflow": "error"}, "admin"),
    ("dashboard.delete_route", "/routes/{route}/delete", {}, "admin"),
    ("dashboard.import_config", "/config/import",
     {"kind": "models", "text": "routes: []\n", "action": "apply"}, "admin"),
    ("dashboard.delete_key", "/keys/{key}/delete", {}, "admin"),
    ("rovodev.add_account", "/rovodev", "rovodev_form", "admin"),
    ("rovodev.test_account", "/rovodev/{key}/test", {}, "admin"),
    ("rovodev.sync_accounts", "/rovodev/sync", {}, "admin"),
    ("dashboard_members.invite", "/members/invites", {"email": ""}, "admin"),
    ("dashboard_members.suspend", "/members/{member}/suspend", {}, "admin"),
    ("dashboard_members.resume", "/members/{member}/resume", {}, "admin"),
    ("dashboard_members.set_limits", "/members/{member}/limits",
     {"rpm_limit": "9", "profile": "default"}, "admin"),
    ("dashboard_members.adjust_balance", "/members/{member}/balance",
     {"amount": "1", "reason": "thanks"}, "admin"),
    ("portal.create_key", "/analytics/keys", {"name": "laptop"}, "member"),
    ("portal.revoke_key", "/analytics/keys/{client_key}/revoke", {}, "member"),
    ("portal.create_token", "/analytics/tokens", {"name": "ci"}, "member"),
    ("portal.revoke_token", "/analytics/tokens/{token}/revoke", {}, "member"),
    ("member_credits.buy", "/analytics/credits", {"amount": "5"}, "member"),
    ("dashboard_members.delete", "/members/{member}/delete", {}, "admin"),
]  # fmt: skip
NEWEST = {
    "key": ProviderKey,
    "profile": Profile,
    "user": User,
    "client_key": ClientKey,
    "route": Route,
    "member": Member,
    "token": MemberToken,
}


def _post_endpoints(app) -> set[str]:
    return {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if "POST" in rule.methods and rule.endpoint.split(".")[0] in BLUEPRINTS
    }


def _newest(app, path: str) -> str:
    def newest(found: re.Match) -> str:
        model = NEWEST[found.group(1)]
        with app.app_context():
            column = model.user_id if model is Member else model.id
            return str(db.session.scalar(select(func.max(column))))

    return re.sub(r"\{(\w+)\}", newest, path)


def _logged_in(app, username: str, password: str):
    """A test client logged in, and a function giving the CSRF token of its last page."""
    client = app.test_client()
    token = CSRF_FIELD.search(client.get("/login").text).group(1)
    answer = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}
    )
    assert answer.status_code == 302, answer.text[:300]
    return client


def _token(client, page: str) -> str:
    return CSRF_FIELD.search(client.get(page).text).group(1)


def test_every_post_route_has_a_case_or_a_reason():
    """The cases and the reasons name real routes, each once."""
    endpoints = [case[0] for case in CASES]
    assert len(endpoints) == len(set(endpoints))
    assert not set(endpoints) & set(IDEMPOTENT)


@pytest.mark.both_databases
def test_every_successful_post_answers_with_a_redirect(app, admin, fake):
    assert _post_endpoints(app) == {case[0] for case in CASES} | set(IDEMPOTENT)
    made = new_member(admin, "prg@example.com")
    assert made["id"]
    clients = {
        "admin": _logged_in(app, "admin", ADMIN_PASSWORD),
        "member": _logged_in(app, "prg@example.com", PASSWORD),
    }
    home = {"admin": "/", "member": "/analytics"}
    key_form = {"name": "k", "provider": "openai", "profile": "default",
                "secret": "sk-prg-aaaaaaaaaaaaaaaa1111", "base_url": fake.base_url,
                "models": "*", "skip_test": "on"}  # fmt: skip
    with FakeRovoDev({ROVO_TOKEN: Account("dev@atlassian.com", CLOUD)}) as rovo:
        forms = {
            "key_form": key_form,
            "rovodev_form": {
                "profile": "default",
                "email": "dev@atlassian.com",
                "apiToken": ROVO_TOKEN,
                "cloudId": CLOUD,
                "dailyTokenLimit": "1000",
                "authScheme": "bearer",
                "baseUrl": rovo.base_url,
            },  # fmt: skip
        }
        for endpoint, path, form, who in CASES:
            client = clients[who]
            data = forms[form] if isinstance(form, str) else dict(form)
            data = {k: _newest(app, v) for k, v in data.items()}
            data["csrf_token"] = _token(client, home[who])
            answer = client.post(_newest(app, path), data=data)
            assert answer.status_code in (302, 303), (
                endpoint,
                answer.status_code,
                answer.text[:2000],
            )
            assert answer.headers["Location"], endpoint


def test_an_import_sent_again_adds_nothing(app, web, fake):
    form = {"provider": "openai", "profile": "default", "base_url": fake.base_url,
            "prefix": "bulk", "skip_test": "on",
            "secrets": "sk-prg-import-aaaaaaaa1111\nsk-prg-import-bbbbbbbb2222"}  # fmt: skip
    assert web.post("/keys/import", form).status_code == 200
    again = web.post("/keys/import", form)  # what a reload of the report page sends
    assert again.status_code == 200 and "duplicate" in again.text.lower()
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ProviderKey)) == 2

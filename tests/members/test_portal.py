"""A member's own dashboard (/analytics) and /api/keys/manage: keys made once and shown
once, used with the official SDKs, seen in their log and budget; access tokens; CSRF on
every form; someone else's key, token or request is not found; keys serve only the
member's profile."""

from __future__ import annotations

import html
import re
from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai
import pytest
import urllib3
from sqlalchemy import func, select

from extensions import db
from models import AuditEntry, ClientKey, MemberToken, RequestLog
from tests.conftest import Admin, chat, live_app
from tests.members.conftest import Browser, new_member

SECRET = "sk-portal-aaaaaaaaaaaa1111"
NEW_SECRET = re.compile(r'id="new-secret-value" value="([^"]+)"')


def signed_in(server, admin, email: str = "mia@example.com") -> tuple[Browser, dict]:
    made = new_member(admin, email)
    person = Browser(server.url)
    assert person.log_in(email).url.endswith("/analytics")
    return person, made


def create_key(person: Browser, name: str = "laptop"):
    """Post the new-key form; (the page the redirect led to, the secret shown or None)."""
    answer = person.post("/analytics/keys", {"name": name})
    shown = NEW_SECRET.search(answer.text)
    return answer, shown.group(1) if shown else None


def key_count(app, member_id: int | None = None) -> int:
    with app.app_context():
        query = select(func.count(ClientKey.id))
        if member_id is not None:
            query = query.where(ClientKey.member_id == member_id)
        return db.session.scalar(query)


def flash_errors(answer) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'class="flash error"[^>]*>([^<]*)<', answer.text)]


@pytest.fixture
def person(server, admin, fake):
    admin.add_key(SECRET, fake.base_url)
    person, made = signed_in(server, admin)
    person.member = made
    yield person
    person.close()


def test_a_member_creates_a_key_once_uses_it_with_both_sdks_and_sees_it_spent(app, server, person):
    answer, key = create_key(person)
    # Post/redirect/get: the form's answer is a redirect to the page, the secret shown there.
    assert [r.status_code for r in answer.history] == [302] and answer.url.endswith("/analytics")
    assert key and key.startswith("kr-") and 'data-copy="new-secret-value"' in answer.text
    with app.app_context():
        row = db.session.scalar(select(ClientKey))
        assert row.member_id == person.member["id"] and row.profile.name == "default"
        assert row.key_hint in answer.text
    # Reloading the page shows the secret no more and creates nothing.
    again = person.get("/analytics")
    assert key not in again.text and NEW_SECRET.search(again.text) is None
    assert key_count(app) == 1

    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    reply = sdk.chat.completions.create(**chat(content="a secret prompt 7431"))
    assert reply.choices[0].message.content
    claude = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)
    message = claude.messages.create(
        model="gpt-4o", max_tokens=20, messages=[{"role": "user", "content": "another 9902"}]
    )
    assert message.content[0].text
    sdk.close()
    claude.close()

    page = person.get("/analytics").text
    with app.app_context():
        rows = list(db.session.scalars(select(RequestLog).order_by(RequestLog.id)))
        spent = sum(row.cost_micros for row in rows)
    assert len(rows) == 2 and spent > 0
    for row in rows:  # each request in their log, with a link to it
        assert f'data-request-id="{row.request_id}"' in page
    assert {"gpt-4o-mini", "gpt-4o"} <= set(re.findall(r'data-label="Model">([^<]+)<', page))
    assert "7431" not in page and "9902" not in page  # no prompts
    # The budget bar counts what the key spent this period; it resets 30 days after joining.
    assert f'data-spent="{spent}"' in page and "resets" in page
    assert 'id="cost-chart"' in page and "<rect" in page.split('id="cost-chart"')[1]
    detail = person.get(f"/analytics/requests/{rows[0].request_id}")
    assert detail.status_code == 200 and "gpt-4o-mini" in detail.text and "7431" not in detail.text
    # The snippets carry this server's address and the key's hint.
    assert f'base_url="{server.url}/v1"' in page and f'base_url="{server.url}"' in page
    assert f'ANTHROPIC_BASE_URL="{server.url}"' in page and "wire_api" in page
    with app.app_context():
        actions = [r.action for r in db.session.scalars(select(AuditEntry))]
    assert actions.count("member.key_create") == 1


def test_keys_are_refused_past_the_allowance_and_while_suspended(app, admin, person):
    member_id = person.member["id"]
    admin.call("PATCH", f"/members/{member_id}", {"max_keys": 1})
    assert create_key(person, "one")[1]
    answer, key = create_key(person, "two")
    assert key is None
    assert flash_errors(answer) == [
        "You may hold 1 live key and have reached that. Revoke one to create another."
    ]
    assert key_count(app) == 1
    admin.call("PATCH", f"/members/{member_id}", {"max_keys": 5, "suspended": True})
    answer, key = create_key(person, "three")
    assert key is None
    assert "Your account is suspended: you cannot create keys." in flash_errors(answer)
    assert key_count(app) == 1


def test_a_revoked_key_is_refused_and_a_name_is_required(app, server, person):
    _, key = create_key(person)
    answer, missing = create_key(person, "  ")
    assert missing is None and flash_errors(answer) == ["Give the key a name, such as “laptop”."]
    with app.app_context():
        key_id = db.session.scalar(select(ClientKey.id))
    revoked = person.post(f"/analytics/keys/{key_id}/revoke")
    assert revoked.history[0].status_code == 302 and "revoked" in revoked.text
    http = urllib3.PoolManager(retries=False)
    answer = http.request(
        "POST", f"{server.url}/v1/chat/completions", json=chat(),
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip
    assert answer.status == 401


def test_another_members_key_token_and_request_are_not_found(app, server, admin, person):
    _, key = create_key(person)
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    sdk.chat.completions.create(**chat())
    sdk.close()
    person.post("/analytics/tokens", {"name": "script"})  # its page shows the request: written
    with app.app_context():
        key_id = db.session.scalar(select(ClientKey.id))
        token_id = db.session.scalar(select(MemberToken.id))
        request_id = db.session.scalar(select(RequestLog.request_id))
    other, _ = signed_in(server, admin, "otto@example.com")
    assert other.get(f"/analytics/requests/{request_id}").status_code == 404
    assert other.post(f"/analytics/keys/{key_id}/revoke").status_code == 404
    assert other.post(f"/analytics/tokens/{token_id}/revoke").status_code == 404
    page = other.get("/analytics").text
    assert request_id not in page and 'id="no-keys"' in page and 'id="no-requests"' in page
    assert 'id="tokens"' not in page
    other.close()
    with app.app_context():
        assert db.session.get(ClientKey, key_id).revoked_at is None
        assert db.session.get(MemberToken, token_id).revoked_at is None
    assert person.get(f"/analytics/requests/{request_id}").status_code == 200


def test_a_members_keys_serve_only_their_profiles_models(app, server, admin, fake):
    admin.add_key(SECRET, fake.base_url, name="default-key", models=["gpt-4o-mini"])
    admin.add_key(SECRET + "b", fake.base_url, name="b-key", profile="team-b", models=["gpt-4o"])
    person, made = signed_in(server, admin)
    admin.call("PATCH", f"/members/{made['id']}", {"profile": "team-b"})
    _, key = create_key(person)
    person.close()
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    assert [m.id for m in sdk.models.list()] == ["gpt-4o"]
    assert sdk.chat.completions.create(**chat(model="gpt-4o")).model
    with pytest.raises(openai.APIStatusError) as refused:
        sdk.chat.completions.create(**chat(model="gpt-4o-mini"))
    assert refused.value.status_code in (400, 404)
    assert all(r.secret == SECRET + "b" for r in fake.requests)
    sdk.close()


@pytest.mark.parametrize(
    "form", ["/analytics/keys", "/analytics/keys/{key}/revoke", "/analytics/tokens",
             "/analytics/tokens/{token}/revoke"],
)  # fmt: skip
def test_every_member_form_needs_the_csrf_token(app, person, form):
    create_key(person)
    person.post("/analytics/tokens", {"name": "script"})
    with app.app_context():
        key_id = db.session.scalar(select(ClientKey.id))
        token_id = db.session.scalar(select(MemberToken.id))
    path = form.format(key=key_id, token=token_id)
    answer = person.post(path, {"name": "forged"}, token=False)
    assert answer.status_code == 400 and "not sent from a KeyRelay page" in answer.text
    with app.app_context():
        assert db.session.scalar(select(func.count(ClientKey.id))) == 1
        assert db.session.scalar(select(func.count(MemberToken.id))) == 1
        assert db.session.get(ClientKey, key_id).revoked_at is None
        assert db.session.get(MemberToken, token_id).revoked_at is None


# -- /api/keys/manage ------------------------------------------------------------------


def test_keys_through_the_api_with_an_access_token(app, server, admin, person):
    made = person.post("/analytics/tokens", {"name": "deploy"})
    token = NEW_SECRET.search(made.text).group(1)
    assert token.startswith("krp-") and NEW_SECRET.search(person.get("/analytics").text) is None
    with app.app_context():
        row = db.session.scalar(select(MemberToken))
        assert row.token_hash != token and row.token_hint in made.text
    http = urllib3.PoolManager(retries=False)
    url = f"{server.url}/api/keys/manage"
    auth = {"Authorization": f"Bearer {token}"}

    assert http.request("GET", url).status == 401
    assert http.request("GET", url, headers={"Authorization": "Bearer krp-wrong"}).status == 401
    assert http.request("GET", url, headers=auth).json() == {"data": []}
    created = http.request("POST", url, json={"name": "ci"}, headers=auth)
    assert created.status == 201, created.data
    body = created.json()
    assert body["key"].startswith("kr-") and body["name"] == "ci" and body["status"] == "active"
    listed = http.request("GET", url, headers=auth).json()["data"]
    assert [k["name"] for k in listed] == ["ci"] and "key" not in listed[0]
    assert listed[0]["key_hint"] == body["key_hint"] and body["key"] not in str(listed)
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=body["key"], max_retries=0)
    assert sdk.chat.completions.create(**chat()).choices
    sdk.close()
    assert http.request("GET", url, headers=auth).json()["data"][0]["spend"] != "0.000000"

    bad = http.request("POST", url, json={"nam": "x"}, headers=auth)
    assert bad.status == 400 and bad.json()["error"]["param"] == "nam"
    empty = http.request("POST", url, json={}, headers=auth)
    assert empty.status == 400 and empty.json()["error"]["param"] == "name"
    admin.call("PATCH", f"/members/{person.member['id']}", {"max_keys": 1})
    full = http.request("POST", url, json={"name": "more"}, headers=auth)
    assert full.status == 409 and full.json()["error"]["code"] == "max_keys"
    admin.call("PATCH", f"/members/{person.member['id']}", {"max_keys": 5, "suspended": True})
    suspended = http.request("POST", url, json={"name": "more"}, headers=auth)
    assert suspended.status == 403 and suspended.json()["error"]["code"] == "member_suspended"

    with app.app_context():
        token_id = db.session.scalar(select(MemberToken.id))
    person.post(f"/analytics/tokens/{token_id}/revoke")
    assert http.request("GET", url, headers=auth).status == 401
    # Another member's token sees only their own keys.
    other, _ = signed_in(server, admin, "otto@example.com")
    theirs = NEW_SECRET.search(other.post("/analytics/tokens", {"name": "t"}).text).group(1)
    other.close()
    seen = http.request("GET", url, headers={"Authorization": f"Bearer {theirs}"})
    assert seen.json() == {"data": []}


def test_the_api_takes_the_dashboard_session_with_its_csrf_header(app, server, person):
    url = "/api/keys/manage"
    assert person.session.get(server.url + url).json() == {"data": []}
    person.get("/analytics")  # the page's token, as htmx sends it in X-CSRFToken
    forged = person.session.post(server.url + url, json={"name": "x"}, timeout=10)
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
    assert key_count(app) == 0
    sent = person.session.post(
        server.url + url, json={"name": "x"}, headers={"X-CSRFToken": person.token}, timeout=10
    )
    assert sent.status_code == 201 and sent.json()["key"].startswith("kr-")
    assert key_count(app, person.member["id"]) == 1


def test_an_admin_session_has_no_member_keys(web):
    web.get("/analytics")
    answer = web.get("/api/keys/manage")
    assert answer.status_code == 403 and answer.json["error"]["code"] == "not_a_member"


def test_buy_credits_shows_only_when_payments_are_set_up(server, admin, settings):
    person, _ = signed_in(server, admin)
    assert 'id="buy-credits"' not in person.get("/analytics").text
    person.close()


def test_buy_credits_form_posts_an_amount_with_the_csrf_token(settings):
    with live_app(settings, PAYSTACK_SECRET="sk_test_portal") as (_, live):
        http = urllib3.PoolManager(retries=False)
        person, _ = signed_in(live, Admin(live.url, http))
        page = person.get("/analytics").text
        person.close()
    form = re.search(r'<form[^>]*id="buy-credits".*?</form>', page, re.S)
    assert form and 'action="/analytics/credits"' in form.group(0)
    assert 'name="amount"' in form.group(0) and 'name="csrf_token"' in form.group(0)


def test_keys_created_at_once_never_pass_the_allowance(app, server, admin, person):
    admin.call("PATCH", f"/members/{person.member['id']}", {"max_keys": 2})
    token = NEW_SECRET.search(person.post("/analytics/tokens", {"name": "t"}).text).group(1)
    http = urllib3.PoolManager(retries=False, maxsize=12)
    auth = {"Authorization": f"Bearer {token}"}

    def create(i: int) -> int:
        url = f"{server.url}/api/keys/manage"
        return http.request("POST", url, json={"name": f"k{i}"}, headers=auth).status

    with ThreadPoolExecutor(12) as pool:
        statuses = sorted(pool.map(create, range(12)))
    assert statuses == [201, 201] + [409] * 10
    assert key_count(app, person.member["id"]) == 2


def test_bad_input_to_the_api_is_a_clear_4xx(server, person):
    token = NEW_SECRET.search(person.post("/analytics/tokens", {"name": "t"}).text).group(1)
    http = urllib3.PoolManager(retries=False)
    url = f"{server.url}/api/keys/manage"
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    cases = [
        (b"not json", auth, 400, "body"),
        (b"[1, 2]", auth, 400, "body"),
        (b'{"name": 5}', auth, 400, "name"),
        (b'{"name": "' + b"x" * 129 + b'"}', auth, 400, "name"),
        (b'{"name": "ok"}', {"Authorization": "Basic abc"}, 401, None),
        (b'{"name": "ok"}', {"Authorization": "Bearer " + "krp-" + "x" * 5000}, 401, None),
    ]
    for body, headers, status, param in cases:
        answer = http.request("POST", url, body=body, headers=headers)
        error = answer.json()["error"]
        assert (answer.status, error["param"]) == (status, param), (body[:20], answer.data)
        assert error["message"] and "Traceback" not in answer.data.decode()
    long_id = person.get("/analytics/requests/" + "r" * 3000)
    assert long_id.status_code == 404
    too_long = person.post("/analytics/tokens", {"name": "t" * 129})
    assert flash_errors(too_long) == ["Keep the name under 128 characters."]
    assert NEW_SECRET.search(too_long.text) is None

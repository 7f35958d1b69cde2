"""Admins manage members through /api/admin/members and the Members page: list with
spend, change limits and profile, adjust balances with a reason (exact, audited), suspend,
delete. Viewers read the page and change nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import urllib3
from sqlalchemy import select

from extensions import db
from models import AuditEntry, ClientKey, CreditTransaction, Member
from tests.conftest import MASTER_KEY, Web, chat, make_viewer
from tests.members.conftest import PASSWORD, member_key, new_member

SECRET = "sk-members-aaaaaaaaaaaa1111"


def audit_of(app, action: str) -> list[tuple[str | None, dict | None]]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEntry).where(AuditEntry.action == action))
        return [(row.target, row.detail) for row in rows]


@pytest.mark.both_databases
def test_list_get_change_and_delete_through_the_api(app, admin):
    made = new_member(admin, "ann@example.com")
    listed = admin.call("GET", "/members").json()["data"]
    assert [m["email"] for m in listed] == ["ann@example.com"]
    assert listed[0]["spend"] == "0.000000" and listed[0]["keys"] == 0
    assert admin.call("GET", f"/members/{made['id']}").json() == listed[0]
    admin.call("PUT", "/profiles/team-b", {})
    changed = admin.call(
        "PATCH",
        f"/members/{made['id']}",
        {"budget": "2.5", "budget_period": "1mo", "rpm_limit": None, "max_keys": 1,
         "profile": "team-b"},
    )  # fmt: skip
    assert changed.status == 200, changed.data
    body = changed.json()
    assert (body["budget"], body["budget_period"], body["rpm_limit"]) == ("2.500000", "1mo", None)
    assert (body["max_keys"], body["profile"], body["tpm_limit"]) == (1, "team-b", 10000)
    [(target, detail)] = audit_of(app, "member.update")
    assert target == f"member:{made['id']}" and detail["budget"] == "2.500000"
    bad = admin.call("PATCH", f"/members/{made['id']}", {"budget_period": "2w"})
    assert bad.status == 400 and bad.json()["error"]["param"] == "budget_period"
    missing = admin.call("PATCH", f"/members/{made['id']}", {"profile": "nobody"})
    assert missing.status == 404 and missing.json()["error"]["param"] == "profile"
    assert admin.call("GET", "/members/999").status == 404
    assert admin.call("DELETE", f"/members/{made['id']}").status == 204
    assert admin.call("GET", "/members").json()["data"] == []
    assert audit_of(app, "member.delete") == [
        (f"member:{made['id']}", {"email": "ann@example.com"})
    ]


def test_a_new_profile_moves_the_members_keys(app, admin, server, fake):
    admin.add_key(SECRET, fake.base_url, name="team-b-key", profile="team-b")
    made = new_member(admin)
    key = member_key(app, made["id"])
    admin.call("PATCH", f"/members/{made['id']}", {"profile": "team-b"})
    http = urllib3.PoolManager(retries=False)
    answer = http.request(
        "POST", f"{server.url}/v1/chat/completions", json=chat(),
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip
    assert answer.status == 200, answer.data
    assert fake.requests[-1].secret == SECRET
    with app.app_context():
        assert db.session.scalar(select(ClientKey)).profile.name == "team-b"


@pytest.mark.both_databases
def test_balance_adjustments_are_exact_audited_and_need_a_reason(app, admin):
    made = new_member(admin)
    path = f"/members/{made['id']}/balance"
    added = admin.call("POST", path, {"amount": "0.000001", "reason": "a micro-dollar"})
    assert added.status == 200 and added.json()["balance"] == "5.000001"
    taken = admin.call("POST", path, {"amount": -3, "reason": "refund of a test"})
    assert taken.json()["balance"] == "2.000001"
    assert audit_of(app, "member.balance")[-1][1] == {
        "amount": "-3.000000",
        "reason": "refund of a test",
        "balance": "2.000001",
        "reference": audit_of(app, "member.balance")[-1][1]["reference"],
    }
    for body, field, status in [
        ({"amount": "1"}, "reason", 400),
        ({"amount": "1", "reason": "   "}, "reason", 400),
        ({"amount": "0", "reason": "nothing"}, "amount", 400),
        ({"amount": "1.0000001", "reason": "too fine"}, "amount", 400),
        ({"amount": "-2.000002", "reason": "too much"}, "amount", 409),
    ]:
        refused = admin.call("POST", path, body)
        assert refused.status == status, (body, refused.data)
        assert refused.json()["error"]["param"] == field
    assert admin.call("GET", f"/members/{made['id']}").json()["balance"] == "2.000001"
    with app.app_context():
        rows = db.session.scalars(select(CreditTransaction).order_by(CreditTransaction.id))
        assert [(r.member_id, r.amount_micros, r.source) for r in rows] == [
            (made["id"], 1, "admin"),
            (made["id"], -3_000_000, "admin"),
        ]


@pytest.mark.both_databases
def test_balance_adjustments_at_once_add_up_exactly(app, admin, server):
    made = new_member(admin)
    http = urllib3.PoolManager(maxsize=8, retries=False)

    def adjust(n: int) -> int:
        answer = http.request(
            "POST", f"{server.url}/api/admin/members/{made['id']}/balance",
            json={"amount": "0.010001", "reason": f"batch {n}"},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )  # fmt: skip
        return answer.status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(adjust, range(24)))
    assert statuses == [200] * 24
    with app.app_context():
        member = db.session.scalar(select(Member))
        assert member.balance_micros == 5_000_000 + 24 * 10_001


def test_suspend_and_resume_through_the_api_are_audited(app, admin):
    made = new_member(admin)
    path = f"/members/{made['id']}"
    assert admin.call("PATCH", path, {"suspended": True}).json()["status"] == "suspended"
    assert admin.call("PATCH", path, {"suspended": False}).json()["status"] == "active"
    assert [a for a, _ in audit_actions(app)] == ["member.suspend", "member.resume"]


def audit_actions(app) -> list[tuple[str, str | None]]:
    with app.app_context():
        rows = db.session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action.in_(["member.suspend", "member.resume"]))
            .order_by(AuditEntry.id)
        )
        return [(row.action, row.target) for row in rows]


@pytest.mark.both_databases
def test_deleting_a_member_removes_their_keys_and_keeps_their_payments(app, admin, server):
    made = new_member(admin)
    key = member_key(app, made["id"])
    admin.call("POST", f"/members/{made['id']}/balance", {"amount": "1", "reason": "gift"})
    assert admin.call("DELETE", f"/members/{made['id']}").status == 204
    http = urllib3.PoolManager(retries=False)
    answer = http.request(
        "POST", f"{server.url}/v1/chat/completions", json=chat(),
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip
    assert answer.status == 401
    with app.app_context():
        assert db.session.scalar(select(ClientKey)) is None
        payment = db.session.scalar(select(CreditTransaction))
        assert payment.member_id is None and payment.amount_micros == 1_000_000


def test_the_members_page_shows_spend_and_changes_go_through_its_forms(app, admin, web):
    made = new_member(admin, "page@example.com")
    page = web.get("/members")
    assert page.status_code == 200
    assert "page@example.com" in page.text and 'data-balance="5000000"' in page.text
    assert 'data-spend="0"' in page.text
    invited = web.post("/members/invites", {"email": ""})
    assert invited.status_code == 302  # the link is on the page it leads to, once
    assert "/signup?invite=" in web.get("/members").text
    assert "/signup?invite=" not in web.get("/members").text  # a reload shows it no more
    member_id = made["id"]
    assert web.post(f"/members/{member_id}/suspend").status_code == 302
    assert "suspended" in web.get("/members").text
    assert web.post(f"/members/{member_id}/resume").status_code == 302
    adjusted = web.post(f"/members/{member_id}/balance", {"amount": "1.5", "reason": "thanks"})
    assert adjusted.status_code == 302
    no_reason = web.post(f"/members/{member_id}/balance", {"amount": "1.5", "reason": ""})
    assert no_reason.status_code == 422 and "reason is required" in no_reason.text
    limits = {"budget": "", "budget_period": "", "rpm_limit": "9", "tpm_limit": "",
              "max_keys": "3", "profile": "default"}  # fmt: skip
    assert web.post(f"/members/{member_id}/limits", limits).status_code == 302
    shown = admin.call("GET", f"/members/{member_id}").json()
    assert (shown["balance"], shown["budget"], shown["rpm_limit"]) == ("6.500000", None, 9)
    assert (shown["tpm_limit"], shown["max_keys"]) == (None, 3)
    assert web.get(f"/members/{member_id}/delete").status_code == 200
    assert web.post(f"/members/{member_id}/delete").status_code == 302
    assert admin.call("GET", "/members").json()["data"] == []


def test_viewers_read_the_members_page_and_change_nothing(app, admin):
    made = new_member(admin, "v@example.com")
    viewer = make_viewer(app)
    page = viewer.get("/members")
    assert page.status_code == 200 and "v@example.com" in page.text
    assert "Adjust balance" not in page.text and "Invite a member" not in page.text
    for path in ("/members/invites", f"/members/{made['id']}/suspend",
                 f"/members/{made['id']}/delete"):  # fmt: skip
        assert viewer.post(path).status_code == 403, path
    assert admin.call("GET", f"/members/{made['id']}").json()["status"] == "active"


def test_an_admin_session_uses_the_members_api_with_its_csrf_header(app, admin):
    made = new_member(admin)
    web = Web(app)
    refused = web.client.patch(f"/api/admin/members/{made['id']}", json={"max_keys": 2})
    assert refused.status_code == 403  # no CSRF header
    done = web.client.patch(
        f"/api/admin/members/{made['id']}", json={"max_keys": 2},
        headers={"X-CSRFToken": web.token},
    )  # fmt: skip
    assert done.status_code == 200 and done.json["max_keys"] == 2
    assert PASSWORD not in str(admin.call("GET", "/members").json())


@pytest.mark.both_databases
def test_the_users_page_leaves_members_to_the_members_page(app, admin, server, web):
    made = new_member(admin, "u@example.com")
    key = member_key(app, made["id"])
    assert "u@example.com" not in web.get("/users").text
    # Removing the member's user (as the CLI or an old link would) removes them whole.
    assert web.post(f"/users/{made['id']}/delete").status_code == 302
    assert admin.call("GET", "/members").json()["data"] == []
    http = urllib3.PoolManager(retries=False)
    answer = http.request(
        "POST", f"{server.url}/v1/chat/completions", json=chat(),
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip
    assert answer.status == 401


def test_an_email_that_names_an_account_already_is_taken(app, admin, clock):
    from gateway.admin import accounts

    with app.app_context():  # an admin whose username is their email (as SSO makes them)
        accounts.create_user(db.session, "boss@example.com", "boss-pass-12", "admin", clock.now())
        db.session.commit()
    taken = admin.call("POST", "/members", {"email": "Boss@Example.com", "password": PASSWORD})
    assert taken.status == 409 and taken.json()["error"]["param"] == "email"


@pytest.mark.parametrize("password", [12345678, ["abcdefghij"], {"a": 1}, True])
def test_a_password_that_is_not_text_is_a_400_naming_it(admin, password):
    made = admin.call("POST", "/members", {"email": "typed@example.com", "password": password})
    assert made.status == 400
    assert made.json()["error"]["param"] == "password"

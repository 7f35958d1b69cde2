"""Members come in by KEYRELAY_SIGNUP: `invite` (a one-time link an admin makes), `open`
(anyone at /signup), `off`; they sign in with their email and land on /analytics."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app import create_app
from extensions import db
from models import AuditEntry, Invite, Member, User
from tests.members.conftest import PASSWORD, Browser, error_text


def invite_url(admin, **body) -> str:
    answer = admin.call("POST", "/invites", body or None)
    assert answer.status == 201, answer.data
    return answer.json()["url"]


def path_of(url: str) -> str:
    return url[url.index("/signup") :]


def sign_up(browser: Browser, path: str, email: str, password: str = PASSWORD):
    page = browser.get(path)
    assert page.status_code == 200, page.text[:500]
    invite = path.partition("invite=")[2]
    return browser.post("/signup", {"email": email, "password": password, "invite": invite})


def test_an_invited_person_signs_up_once_and_lands_on_their_dashboard(app, admin, browser):
    url = invite_url(admin)
    assert url.startswith("http") and "/signup?invite=" in url
    answer = sign_up(browser, path_of(url), "New.Person@Example.com")
    assert answer.status_code == 200
    assert answer.url.endswith("/analytics")
    assert "Your dashboard" in answer.text
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "new.person@example.com"))
        assert user.role == "member" and user.password_hash != PASSWORD
        assert db.session.get(Member, user.id) is not None
        invite = db.session.scalar(select(Invite))
        assert invite.used_by == user.id and invite.used_at is not None
        actions = [row.action for row in db.session.scalars(select(AuditEntry))]
        assert "member.invite" in actions and "member.create" in actions
    # The link works once: the next person reads why not.
    other = Browser(browser.url)
    again = other.get(path_of(url))
    assert again.status_code == 410
    assert "already used" in error_text(again)
    other.close()


def test_invite_mode_refuses_sign_up_without_a_valid_invite(app, browser):
    answer = browser.get("/signup")
    assert answer.status_code == 403
    assert "not valid" in error_text(answer)
    assert browser.get("/signup?invite=made-up-token").status_code == 403
    # Posting the form without an invite makes no account either.
    browser.get("/login")
    posted = browser.post("/signup", {"email": "x@example.com", "password": PASSWORD})
    assert posted.status_code == 403
    with app.app_context():
        assert db.session.scalar(select(User).where(User.email == "x@example.com")) is None


def test_an_invite_expires(admin, browser, clock):
    url = invite_url(admin)
    clock.advance(hours=73)  # KEYRELAY_INVITE_HOURS is 72
    answer = browser.get(path_of(url))
    assert answer.status_code == 410
    assert "expired" in error_text(answer)


def test_an_invite_for_one_email_takes_only_that_email(admin, browser):
    url = invite_url(admin, email="Kim@Example.com")
    answer = sign_up(browser, path_of(url), "someone@example.com")
    assert answer.status_code == 422
    assert "This invite is for kim@example.com." in error_text(answer)
    assert sign_up(browser, path_of(url), "kim@example.com").url.endswith("/analytics")


def test_open_sign_up_needs_no_invite(app, server, browser):
    app.config["SIGNUP"] = "open"
    assert 'href="/signup"' in browser.get("/login").text
    answer = sign_up(browser, "/signup", "open@example.com")
    assert answer.url.endswith("/analytics")
    # A second account for the same email (any case) is refused, readably.
    other = Browser(server.url)
    taken = sign_up(other, "/signup", "OPEN@example.com")
    assert taken.status_code == 409
    assert "already an account for open@example.com" in error_text(taken)
    short = sign_up(other, "/signup", "short@example.com", "1234567")
    assert short.status_code == 422 and "at least 8 characters" in error_text(short)
    other.close()


def test_open_sign_up_makes_only_so_many_accounts_from_one_address(app, server):
    app.config.update(SIGNUP="open", LOGIN_LOCK_AFTER=3)
    made = []
    for number in range(4):
        browser = Browser(server.url)
        made.append(sign_up(browser, "/signup", f"many{number}@example.com"))
        browser.close()
    assert [answer.url.endswith("/analytics") for answer in made] == [True, True, True, False]
    assert made[3].status_code == 429
    assert "Too many sign-ups from your address" in error_text(made[3])


def test_sign_up_off_is_a_readable_404(app, admin, browser):
    url = invite_url(admin)
    app.config["SIGNUP"] = "off"
    answer = browser.get(path_of(url))  # an invite made before does not open it
    assert answer.status_code == 404
    assert "Sign-up is off on this server" in error_text(answer)
    assert 'href="/signup"' not in browser.get("/login").text
    # No new invites either: their links could not be used.
    refused = admin.call("POST", "/invites")
    assert refused.status == 409 and "Sign-up is off" in refused.json()["error"]["message"]


def test_the_sign_up_form_needs_its_csrf_token(app, browser):
    app.config["SIGNUP"] = "open"
    browser.get("/signup")
    answer = browser.post("/signup", {"email": "c@example.com", "password": PASSWORD}, token=False)
    assert answer.status_code == 400
    with app.app_context():
        assert db.session.scalar(select(User).where(User.email == "c@example.com")) is None


def test_a_member_signs_in_with_email_and_is_throttled_like_admins(app, admin, browser):
    from tests.members.conftest import new_member

    new_member(admin, "sam@example.com")
    answer = browser.log_in("SAM@example.com")
    assert answer.url.endswith("/analytics")  # not the admin overview
    # `next` pointing into the admin dashboard still lands on the member's page.
    again = Browser(browser.url)
    again.get("/login?next=/keys")
    landed = again.post("/login?next=/keys", {"username": "sam@example.com", "password": PASSWORD})
    assert landed.url.endswith("/analytics")
    again.close()
    wrong = Browser(browser.url)
    statuses = [wrong.log_in("sam@example.com", "wrong-pass-1").status_code for _ in range(11)]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    wrong.close()


def test_new_members_take_the_member_settings(settings, tmp_path):
    from tests.conftest import LiveServer

    settings.update(
        SIGNUP="open",
        MEMBER_CREDITS="7.25",
        MEMBER_BUDGET="3",
        MEMBER_BUDGET_PERIOD="7d",
        MEMBER_RPM=7,
        MEMBER_TPM=0,
        MEMBER_MAX_KEYS=2,
        MEMBER_PROFILE="members",
    )
    app = create_app(settings)
    live = LiveServer(app)
    browser = Browser(live.url)
    try:
        assert sign_up(browser, "/signup", "d@example.com").url.endswith("/analytics")
        with app.app_context():
            member = db.session.scalar(select(Member))
            assert member.balance_micros == 7_250_000
            assert (member.budget_micros, member.budget_period) == (3_000_000, "7d")
            assert (member.rpm_limit, member.tpm_limit, member.max_keys) == (7, None, 2)
            assert member.profile.name == "members"
    finally:
        browser.close()
        live.close()
        app.extensions["keyrelay"].close()


def test_the_seed_defaults_apply_when_nothing_is_set(app, admin):
    from tests.members.conftest import new_member

    made = new_member(admin)
    assert made["balance"] == "5.000000" and made["budget"] == "10.000000"
    assert made["budget_period"] == "30d" and made["profile"] == "default"
    assert (made["rpm_limit"], made["tpm_limit"], made["max_keys"]) == (100, 10000, 5)


@pytest.mark.parametrize(
    ("name", "value"),
    [("SIGNUP", "sometimes"), ("MEMBER_CREDITS", "five"), ("MEMBER_BUDGET_PERIOD", "2w")],
)
def test_an_unreadable_member_setting_stops_the_start_naming_it(settings, name, value):
    with pytest.raises(SystemExit) as stopped:
        create_app({**settings, name: value})
    assert f"KEYRELAY_{name}" in str(stopped.value)

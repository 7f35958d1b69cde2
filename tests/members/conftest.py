"""Helpers of the member tests: a browser (requests over loopback, with the CSRF token of
the page it last read), members made through the admin API, keys owned by a member."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import requests

from extensions import db
from gateway.keys import client_keys as clientkeys
from models import ClientKey

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "member-pass-1"


class Browser:
    """A person's browser on the live server: cookies kept, forms posted with their token."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.token: str | None = None

    def get(self, path: str, **kwargs) -> requests.Response:
        answer = self.session.get(self.url + path, timeout=10, **kwargs)
        if found := CSRF.search(answer.text):
            self.token = found.group(1)
        return answer

    def post(self, path: str, data: dict | None = None, token: bool = True, **kwargs):
        form = {**({"csrf_token": self.token} if token else {}), **(data or {})}
        answer = self.session.post(self.url + path, data=form, timeout=10, **kwargs)
        if found := CSRF.search(answer.text):
            self.token = found.group(1)
        return answer

    def log_in(self, username: str, password: str = PASSWORD) -> requests.Response:
        self.get("/login")
        return self.post("/login", {"username": username, "password": password})

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def settings(settings):
    """No test here is about upstream timeouts: a loaded machine must not fail them."""
    settings.update(READ_TIMEOUT=10.0, CONNECT_TIMEOUT=5.0, REQUEST_DEADLINE=30.0)
    return settings


@pytest.fixture
def browser(server):
    opened = Browser(server.url)
    yield opened
    opened.close()


def error_text(answer: requests.Response, element: str = "signup-error") -> str:
    found = re.search(rf'id="{element}">([^<]*)<', answer.text)
    assert found, answer.text[:800]
    return found.group(1).replace("&#39;", "'")


def new_member(admin, email: str = "mia@example.com", password: str = PASSWORD) -> dict:
    """A member made through the admin API (the defaults apply)."""
    answer = admin.call("POST", "/members", {"email": email, "password": password})
    assert answer.status == 201, answer.data
    return answer.json()


def member_key(app, member_id: int, name: str = "laptop") -> str:
    """A key owned by the member, on the member's profile (the member's own page makes
    these; here the domain does)."""
    with app.app_context():
        from models import Member

        member = db.session.get(Member, member_id)
        spec = clientkeys.parse({"name": name, "profile": member.profile.name}, creating=True)
        row, key = clientkeys.create(db.session, spec, "test", datetime.now(UTC))
        row.member_id = member_id
        db.session.commit()
        assert db.session.get(ClientKey, row.id).member_id == member_id
    return key

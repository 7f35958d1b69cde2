"""The dashboard's playground: a chat sent through a chosen profile, model and key, the
answer streamed into the page (real headless Chromium), then the request's attempts; every
bad field named at once; viewers look but do not send."""

from __future__ import annotations

import html
import re

import pytest
from playwright.sync_api import expect

from tests.browser import screenshot
from tests.conftest import ADMIN_PASSWORD, make_viewer
from tests.fake_upstream import DEFAULT_CONTENT, Behaviour

FIRST, SECOND = "sk-play-aaaaaaaaaaaa1111", "sk-play-bbbbbbbbbbbb2222"


def _form(**fields) -> dict:
    base = {"profile": "default", "model": "gpt-4o-mini", "message": "Hi", "stream": "on"}
    return {**base, **fields}


def _request_id(body: str) -> str:
    return re.search(r"req_[0-9a-z]+", body).group(0)


def test_a_chosen_key_is_tried_first_and_the_answer_streams(admin, fake, web):
    admin.add_key(FIRST, fake.base_url, name="first", priority=10)
    second = admin.add_key(SECOND, fake.base_url, name="second")
    answer = web.post("/playground/send", _form(key=str(second["id"])))
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    text = answer.get_data(as_text=True)
    assert "Hello" in text and "data: [DONE]" in text
    assert [r.secret for r in fake.requests] == [SECOND]  # the chosen key, not the first
    request_id = answer.headers["x-keyrelay-request-id"]
    attempts = html.unescape(web.get(f"/playground/attempts/{request_id}").text)
    assert re.search(r'data-attempt="1".*?second', attempts, re.S)
    assert web.get("/playground/attempts/req_nothing").status_code == 404


def test_a_chosen_key_that_fails_is_followed_by_the_others(admin, fake, web):
    first = admin.add_key(FIRST, fake.base_url, name="first")
    admin.add_key(SECOND, fake.base_url, name="second")
    fake.set_behaviour(FIRST, Behaviour.server_error(500))
    answer = web.post("/playground/send", _form(key=str(first["id"]), stream=""))
    assert answer.status_code == 200 and answer.json["choices"][0]["message"]["content"]
    assert [r.secret for r in fake.requests] == [FIRST, SECOND]
    request_id = answer.headers["x-keyrelay-request-id"]
    attempts = html.unescape(web.get(f"/playground/attempts/{request_id}").text)
    assert 'data-attempt="1"' in attempts and 'data-attempt="2"' in attempts


def test_every_bad_field_is_named_at_once_and_nothing_is_sent(admin, fake, web):
    admin.call("POST", "/profiles", {"name": "team"})
    other = admin.add_key(FIRST, fake.base_url, name="team-key", profile="team")
    bad = _form(model="", message="  ", key=str(other["id"]), max_tokens="-3", profile="default")
    answer = web.post("/playground/send", bad)
    assert answer.status_code == 400
    errors = answer.json["errors"]
    assert set(errors) == {"model", "message", "key", "max_tokens"}
    assert "not in this profile" in errors["key"]
    nobody = web.post("/playground/send", _form(profile="nobody", key="x"))
    assert set(nobody.json["errors"]) == {"profile", "key"}
    assert fake.requests == []


def test_an_unknown_model_is_the_proxys_own_error(admin, fake, web):
    admin.add_key(FIRST, fake.base_url, name="first", models=["gpt-4o-mini"])
    answer = web.post("/playground/send", _form(model="no-such-model"))
    assert answer.status_code == 404
    assert "no-such-model" in answer.json["error"]["message"]


def test_viewers_see_the_page_but_cannot_send(app, admin, fake):
    admin.add_key(FIRST, fake.base_url, name="first")
    viewer = make_viewer(app)
    page = viewer.get("/playground")
    assert page.status_code == 200 and "sending needs an admin" in page.text
    assert viewer.post("/playground/send", _form()).status_code == 403
    assert fake.requests == []


def test_the_playground_streams_an_answer_in_chromium(browser, server, admin, fake):
    admin.add_key(FIRST, fake.base_url, name="first")
    second = admin.add_key(SECOND, fake.base_url, name="second")
    fake.set_behaviour(SECOND, Behaviour.trickle(every=0.05))
    context = browser.new_context(base_url=server.url, viewport={"width": 1360, "height": 900})
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.set_default_timeout(10_000)
    page.goto("/login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Model").fill("gpt-4o-mini")
    page.get_by_label("Key tried first").select_option(str(second["id"]))
    page.get_by_label("Message").fill("Say hello")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#playground-answer")).to_have_text(DEFAULT_CONTENT)
    expect(page.locator("#playground-status")).to_have_text(re.compile(r"Done \(HTTP 200\)"))
    expect(page.locator("#playground-meta")).to_contain_text("finish reason: stop")
    expect(page.locator("#playground-attempts [data-attempt='1']")).to_contain_text("second")
    screenshot(page, "playground")
    page.get_by_label("Model").fill("")
    page.get_by_label("Message").fill("")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("[data-error='model']")).to_be_visible()
    expect(page.locator("[data-error='message']")).to_be_visible()
    context.close()
    assert [p for p in problems if not p.startswith("Failed to load resource")] == []


@pytest.mark.parametrize("field", ["key", "max_tokens"])
@pytest.mark.parametrize("value", ["²", "9223372036854775808", "-1", "1e3"])
def test_odd_numbers_are_named_not_a_500(admin, fake, web, field, value):
    admin.add_key(FIRST, fake.base_url, name="first")
    answer = web.post("/playground/send", _form(**{field: value}))
    assert answer.status_code == 400 and set(answer.json["errors"]) == {field}
    assert fake.requests == []

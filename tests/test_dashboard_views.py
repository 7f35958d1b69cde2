"""Every dashboard view and partial through the Flask test client, with real traffic
through the proxy (the OpenAI SDK over loopback) against the fake upstream."""

from __future__ import annotations

import html
import re
from datetime import date

import openai
import pytest
from sqlalchemy import select, text

from extensions import db
from models import AuditEntry, Profile, ProviderKey
from tests.conftest import chat
from tests.fake_upstream import Behaviour

SECRET = "sk-dash-aaaaaaaaaaaaaaaa1111"


def _add(web, fake, secret=SECRET, **fields):
    data = {
        "name": "main",
        "provider": "openai",
        "profile": "default",
        "secret": secret,
        "base_url": fake.base_url,
        "models": "*",
        "daily_token_limit": "1000",
        **fields,
    }
    return web.post("/keys", data)


def _text(response) -> str:
    """The page with HTML entities decoded (apostrophes come back as &#39;)."""
    return html.unescape(response.text)


def _flash(page: str) -> list[str]:
    return re.findall(r'<p class="flash [a-z]+"[^>]*>([^<]+)</p>', page)


def _used(fragment: str, key_id: int) -> int:
    row = re.search(rf'data-key-id="{key_id}".*?data-used="(\d+)"', fragment, re.S)
    return int(row.group(1))


def test_add_key_tests_it_and_shows_it_masked(web, fake):
    response = _add(web, fake)
    assert response.status_code == 302
    page = web.get("/keys").text
    [message] = _flash(page)
    assert "Added key #1 main (sk-dash-aaaa…1111). Test passed" in message
    assert "sk-dash-aaaa…1111" in page and SECRET not in page
    assert fake.requests[-1].path.endswith("/models")  # the test was a real call


def test_a_key_added_without_models_serves_what_its_test_found(web, fake):
    _add(web, fake, models="")
    row = web.get("/keys").text
    assert "gpt-4o, gpt-4o-mini" in row  # the models column: what the test discovered
    _add(web, fake, secret="sk-dash-bbbbbbbbbbbbbbbb2222", name="quiet", models="", skip_test="on")
    page = web.get("/keys").text
    assert "Added key #2 quiet (sk-dash-bbbb…2222) (not tested)." in _flash(page)
    assert "none yet: test the key" in page
    assert fake.requests_for("sk-dash-bbbbbbbbbbbbbbbb2222") == []
    form = web.get("/keys/new").text
    assert 'name="skip_test"' in form and 'name="models" value=""' in form


def test_add_key_whose_test_fails_says_why(web, fake):
    fake.set_behaviour("sk-bad-0000000000000000", Behaviour.unauthorized())
    _add(web, fake, secret="sk-bad-0000000000000000", name="bad")
    page = web.get("/keys").text
    [message] = _flash(page)
    assert "Test: auth failed — HTTP 401" in message
    assert 'class="badge auth_failed"' in page


def test_bad_key_form_shows_the_error_by_the_field_and_keeps_the_input(web, fake):
    response = _add(web, fake, base_url="ftp://nope", name="kept-name")
    assert response.status_code == 422
    page = _text(response)
    field = re.search(
        r'name="base_url" value="ftp://nope"[^>]*aria-invalid="true">(.*?)</label>', page
    )
    assert '<span class="field-error"' in field.group(1)
    assert "'base_url' must be an http(s) URL." in field.group(1)
    assert 'value="kept-name"' in page
    assert SECRET not in page  # a typed secret is never sent back
    bad_limit = _add(web, fake, daily_token_limit="lots")
    assert bad_limit.status_code == 422 and "must be a positive integer" in bad_limit.text
    with web.client.application.app_context():
        assert db.session.scalar(select(ProviderKey.id)) is None


def test_duplicate_secret_is_refused_on_the_form(web, fake):
    _add(web, fake)
    again = _add(web, fake, name="copy")
    assert again.status_code == 422
    assert "This secret is already a key in profile default." in again.text


def test_edit_key_keeps_the_secret_unless_a_new_one_is_given(web, fake, admin):
    _add(web, fake)
    form = web.get("/keys/1/edit").text
    assert 'value="main"' in form and SECRET not in form and "unchanged: sk-dash-aaaa…1111" in form
    data = {
        "name": "renamed",
        "provider": "openai",
        "profile": "default",
        "secret": "",
        "base_url": fake.base_url,
        "models": "gpt-4o-mini",
        "daily_token_limit": "",
    }
    assert web.post("/keys/1/edit", data).status_code == 302
    key = admin.key(1)
    assert (key["name"], key["models"], key["daily_token_limit"]) == (
        "renamed",
        ["gpt-4o-mini"],
        None,
    )
    assert key["secret"] == "sk-dash-aaaa…1111"
    data["secret"] = "sk-newer-bbbbbbbbbbbb2222"
    web.post("/keys/1/edit", data)
    assert admin.key(1)["secret"] == "sk-newer-bbbb…2222"
    bad = web.post("/keys/1/edit", {**data, "profile": "no spaces allowed"})
    assert bad.status_code == 422 and "'profile' may hold letters" in _text(bad)
    assert web.get("/keys/99/edit").status_code == 404


def test_key_form_sets_and_shows_every_limit(web, fake, admin):
    limits = {
        "rpm_limit": "60",
        "tpm_limit": "90000",
        "monthly_token_limit": "5000000",
        "daily_cost_limit": "1.5",
        "monthly_cost_limit": "20",
        "total_cost_limit": "100",
        "expires_at": "2027-01-31T18:00",
        "model_limits": "gpt-4o rpm=5 tpm=1000\n\ngpt-4o-mini rpm=50",
    }
    assert _add(web, fake, **limits).status_code == 302
    key = admin.key(1)
    assert (key["rpm_limit"], key["tpm_limit"], key["monthly_token_limit"]) == (60, 90000, 5000000)
    assert (key["daily_cost_limit"], key["total_cost_limit"]) == ("1.500000", "100.000000")
    assert key["expires_at"] == "2027-01-31T18:00:00+00:00"  # the form's time is in the zone
    assert key["model_limits"] == {"gpt-4o": {"rpm": 5, "tpm": 1000}, "gpt-4o-mini": {"rpm": 50}}
    form = web.get("/keys/1/edit").text
    for shown in ('value="60"', 'value="1.5"', 'value="2027-01-31T18:00"', "gpt-4o rpm=5 tpm=1000"):
        assert shown in form, shown
    data = {"name": "main", "provider": "openai", "profile": "default", "secret": ""}
    data.update(base_url=fake.base_url, models="*", **{**limits, "rpm_limit": ""})
    assert web.post("/keys/1/edit", data).status_code == 302
    assert admin.key(1)["rpm_limit"] is None and admin.key(1)["tpm_limit"] == 90000
    for field, value, message in [
        ("daily_cost_limit", "lots", "amount in USD"),
        ("model_limits", "gpt-4o fast", "rpm=N"),
        ("model_limits", "gpt-4o rpm=0", "positive integer"),
        ("expires_at", "soon", "date and time"),
    ]:
        bad = web.post("/keys/1/edit", {**data, field: value})
        assert bad.status_code == 422 and message in _text(bad), field
        assert f'name="{field}"' in bad.text and value in _text(bad)  # the input is kept
    assert admin.key(1)["daily_cost_limit"] == "1.500000"


def test_delete_asks_first_then_deletes(web, fake, admin):
    _add(web, fake)
    confirm = web.get("/keys/1/delete")
    assert "Delete key #1 main?" in confirm.text and 'action="/keys/1/delete"' in confirm.text
    assert admin.key(1)["id"] == 1  # asking deleted nothing
    assert web.post("/keys/1/delete").status_code == 302
    assert admin.call("GET", "/keys/1").status == 404


def test_toggle_and_test_swap_the_row_in_place(web, fake, admin):
    _add(web, fake)
    row = web.post("/keys/1/toggle", htmx=True)
    assert row.status_code == 200 and row.text.lstrip().startswith('<tbody id="key-1"')
    assert 'class="badge disabled"' in row.text and ">Enable</button>" in row.text
    assert admin.key(1)["status"] == "disabled"
    web.post("/keys/1/toggle", htmx=True)
    assert admin.key(1)["status"] == "active"
    fake.set_behaviour(SECRET, Behaviour.rate_limited())
    tested = web.post("/keys/1/test", htmx=True)
    assert "Key #1: rate limited — HTTP 429" in tested.text
    fake.set_behaviour(SECRET, Behaviour.ok())
    assert "test passed (2 models)" in web.post("/keys/1/test", htmx=True).text
    # Without htmx the same buttons work as plain forms (redirect + message).
    assert web.post("/keys/1/toggle").status_code == 302
    assert "Key #1 disabled." in _flash(web.get("/keys").text)


def test_bulk_import_reports_added_duplicates_and_rejected(web, fake):
    _add(web, fake, secret="sk-existing-000000001111")
    pasted = "\n".join(
        [
            "# team keys",
            "sk-imp-aaaaaaaaaaaa0001",
            "",
            "sk-imp-aaaaaaaaaaaa0002",
            "sk-imp-aaaaaaaaaaaa0001",
            "sk-existing-000000001111",
            "not a key at all",
            "sk-imp-aaaaaaaaaaaa0003",
        ]
    )
    data = {
        "secrets": pasted,
        "provider": "openai",
        "profile": "team-x",
        "base_url": fake.base_url,
        "models": "gpt-4o-mini",
        "daily_token_limit": "500",
        "prefix": "team",
    }
    page = web.post("/keys/import", data).text
    counts = dict(re.findall(r'data-count="(\w+)">(\d+)<', page))
    assert counts == {"added": "4", "duplicates": "1", "rejected": "1"}
    assert "twice in paste" in page and "must not contain spaces" in page
    assert "sk-imp-aaaaaaaaaaaa0001" not in page and "sk-imp-aaaa…0001" in page
    # The existing key was in another profile, so here it is new: duplicates are per profile.
    assert "added as #4 team-1111" in page
    assert page.count('data-test="ok"') == 4  # each imported key was tested
    keys = web.get("/keys").text
    assert keys.count('<td data-label="Profile">team-x</td>') == 4
    again = web.post("/keys/import", data).text
    assert dict(re.findall(r'data-count="(\w+)">(\d+)<', again))["duplicates"] == "5"


def test_bulk_import_checks_the_shared_fields_first(web, fake):
    response = web.post(
        "/keys/import",
        {
            "secrets": "sk-x-123456789012",
            "provider": "openai",
            "profile": "ok",
            "base_url": "nope",
            "models": "*",
        },
    )
    assert response.status_code == 422 and "'base_url' must be an http(s) URL." in _text(response)
    empty = web.post("/keys/import", {"secrets": "  ", "provider": "openai"})
    assert "Paste at least one key" in empty.text


@pytest.mark.both_databases
def test_overview_cards_and_bars_follow_proxy_traffic(web, fake, client):
    _add(web, fake)
    before = web.get("/partials/key-bars").text
    assert _used(before, 1) == 0
    reply = client.chat.completions.create(**chat())
    used = reply.usage.total_tokens
    bars = web.get("/partials/key-bars").text
    assert _used(bars, 1) == used
    assert re.search(rf'<meter min="0" max="1000"[^>]*value="{used}"', bars)
    cards = web.get("/partials/cards").text
    assert re.search(
        r'data-period="today"><span class="label">Today: requests</span>'
        r'<strong data-stat="requests">1<',
        cards,
    )
    assert re.search(rf'data-stat="tokens">{used}<', cards)
    assert "100.0%" in cards
    profiles = web.get("/partials/profile-bars").text
    assert re.search(rf'data-profile="default".*?data-used="{used}"', profiles, re.S)
    overview = web.get("/").text
    assert 'hx-get="/partials/key-bars" hx-trigger="every 5000ms"' in overview


@pytest.mark.both_databases
def test_recent_errors_and_key_health(web, fake, client, clock):
    _add(web, fake)
    fake.set_behaviour(SECRET, Behaviour.rate_limited(retry_after=30))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**chat())
    errors = web.get("/partials/errors").text
    assert '<span class="code bad">429</span>' in errors
    health = web.get("/partials/key-bars").text
    assert 'class="badge cooling_down"' in health and "back in 30 s" in health
    assert "tried again at 12:00:30" in health and "The upstream said: HTTP 429: Rate" in health
    clock.advance(seconds=31)
    assert 'class="badge active"' in web.get("/partials/key-bars").text


@pytest.mark.both_databases
def test_profiles_page_creates_and_changes_strategy(web, admin):
    assert web.post("/profiles", {"name": "team-a", "strategy": "round-robin"}).status_code == 302
    bad = web.post("/profiles", {"name": "team a", "strategy": "default"})
    assert (
        bad.status_code == 422 and "Use 1–64 letters" in bad.text and 'value="team a"' in bad.text
    )
    taken = web.post("/profiles", {"name": "team-a"})
    assert "A profile named 'team-a' exists." in _text(taken)
    with web.client.application.app_context():
        profile_id = db.session.scalar(select(Profile.id).where(Profile.name == "team-a"))
    web.post(f"/profiles/{profile_id}", {"strategy": "most-remaining"})
    page = web.get("/profiles").text
    assert re.search(r'data-profile="team-a">.*?<option selected>most-remaining', page, re.S)
    assert web.post(f"/profiles/{profile_id}", {"strategy": "random"}).status_code == 422
    form = {"strategy": "default", "wait_for_key_seconds": "20", "use_paid_models": "no"}
    web.post(f"/profiles/{profile_id}", form)
    shown = {p["name"]: p for p in admin.call("GET", "/profiles").json()["data"]}["team-a"]
    assert (shown["strategy"], shown["wait_for_key_seconds"], shown["use_paid_models"]) == (
        None,
        20,
        False,
    )
    assert "waits up to 20 s for a key" in web.get("/profiles").text
    bad_wait = web.post(f"/profiles/{profile_id}", {**form, "wait_for_key_seconds": "forever"})
    assert bad_wait.status_code == 422 and "wait_for_key_seconds" in _text(bad_wait)
    bad_new = web.post("/profiles", {"name": "team-c", "wait_for_key_seconds": "-1"})
    assert bad_new.status_code == 422 and 'value="team-c"' in bad_new.text


@pytest.mark.both_databases
def test_request_log_filters_pages_and_attempts(web, fake, client, clock):
    _add(web, fake)
    _add(web, fake, secret="sk-dash-bbbbbbbbbbbbbbbb2222", name="second", profile="team-b")
    for _ in range(3):
        client.chat.completions.create(**chat())
    client.chat.completions.create(**chat(model="gpt-4o"))
    fake.set_behaviour(SECRET, Behaviour.server_error(503))
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(**chat())
    clock.advance(days=1)
    client.with_options(default_headers={"X-Profile": "team-b"}).chat.completions.create(**chat())

    def ids(**params):
        page = web.get("/logs", query_string=params)
        assert page.status_code == 200, page.text
        return [int(i) for i in re.findall(r'<tr data-log-id="(\d+)"', page.text)]

    assert ids() == [6, 5, 4, 3, 2, 1]
    assert ids(model="gpt-4o") == [4]
    assert (
        ids(status="error") == [5]
        and ids(status="502") == [5]
        and ids(status="ok") == [6, 4, 3, 2, 1]
    )
    assert ids(profile="team-b") == [6]
    assert ids(key="2") == [6]
    assert ids(since="2026-11-24") == [6] and ids(until="2026-11-23") == [5, 4, 3, 2, 1]
    bad = web.get("/logs", query_string={"since": "yesterday"})
    assert bad.status_code == 422 and "Use a date like 2026-11-23." in bad.text
    assert "Use 'ok', 'error'" in _text(web.get("/logs?status=bad"))
    attempts = web.get("/logs/5/attempts").text
    assert "#1 main" in attempts and "503" in attempts
    assert web.get("/logs/999/attempts").status_code == 404


@pytest.mark.both_databases
def test_request_log_pages_by_cursor(web, fake, client, monkeypatch):
    import blueprints.dashboard as dashboard

    monkeypatch.setattr(dashboard, "PAGE", 2)
    _add(web, fake)
    for _ in range(5):
        client.chat.completions.create(**chat())
    first = web.get("/logs").text
    assert re.findall(r'data-log-id="(\d+)"', first) == ["5", "4"]
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = web.get(older).text
    assert re.findall(r'data-log-id="(\d+)"', second) == ["3", "2"]
    last = web.get(re.search(r'rel="next" href="([^"]+)"', second).group(1)).text
    assert re.findall(r'data-log-id="(\d+)"', last) == ["1"] and 'rel="next"' not in last


@pytest.mark.both_databases
def test_usage_charts_by_model_and_by_key(web, fake, client, clock):
    _add(web, fake)
    client.chat.completions.create(**chat())
    clock.advance(days=1)
    client.chat.completions.create(**chat(model="gpt-4o"))
    page = web.get("/usage").text
    titles = re.findall(r"<title>([^<]+)</title>", page)
    assert any(t.startswith("2026-11-23 · gpt-4o-mini: ") and t.endswith(" tokens") for t in titles)
    assert any(t.startswith("2026-11-24 · gpt-4o: ") for t in titles)
    assert "2026-11-24 · gpt-4o: 1 requests" in titles
    by_key = web.get("/usage?by=key").text
    assert "2026-11-23 · #1 main: 1 requests" in by_key
    # Cost is stored in micro-dollars and drawn exactly (pricing comes with issue 4).
    with web.client.application.app_context():
        db.session.execute(text("UPDATE usage_daily SET cost_micros = 1234500"))
        db.session.commit()
    cost = html.unescape(web.get("/usage").text.split('id="cost-chart"')[1])
    assert "2026-11-23 · gpt-4o-mini: $1.23</title>" in cost  # cents for people
    # Scripts only from static/ (CSP script-src 'self'), never inline; app.js is not
    # deferred because it sets the colour theme before the first paint.
    assert re.findall(r"<script[^>]*>", by_key) == [
        '<script src="/static/vendor/htmx-2.0.11.min.js" defer>',
        '<script src="/static/app.js">',
    ]


@pytest.mark.sqlite_only  # reads the SQLite file (iterdump)
def test_audit_log_lists_admin_actions_without_secrets(web, fake, admin, app):
    _add(web, fake)
    web.post("/keys/1/toggle")
    admin.add_key("sk-api-cccccccccccccccc3333", fake.base_url, name="api")
    page = web.get("/audit").text
    for action in ("login", "key.create", "key.disable"):
        assert f"<code>{action}</code>" in page
    assert "master key" in page  # the JSON API call is audited with its actor
    with app.app_context():
        dump = "\n".join(db.session.connection().connection.iterdump())
        entries = db.session.scalars(select(AuditEntry)).all()
    assert {e.actor for e in entries} == {"admin", "master key"}
    for secret in (SECRET, "sk-api-cccccccccccccccc3333"):
        assert secret not in page
        assert secret not in "".join(str(e.detail) for e in entries)
        assert secret not in dump  # not even in the database: encrypted only


def test_users_page(web, app):
    assert (
        web.post(
            "/users", {"username": "vera", "password": "viewer-pass-1", "role": "viewer"}
        ).status_code
        == 302
    )
    taken = web.post("/users", {"username": "vera", "password": "viewer-pass-1", "role": "viewer"})
    assert taken.status_code == 422 and "The username 'vera' is taken." in _text(taken)
    short = web.post("/users", {"username": "sam", "password": "x", "role": "admin"})
    assert "at least 8 characters" in short.text and 'value="sam"' in short.text
    page = web.get("/users").text
    assert 'data-user="vera"' in page
    with app.app_context():
        user_id = db.session.scalar(text("SELECT id FROM users WHERE username = 'vera'"))
        me = db.session.scalar(text("SELECT id FROM users WHERE username = 'admin'"))
    assert web.post(f"/users/{me}/delete").status_code == 400
    assert web.post(f"/users/{user_id}/delete").status_code == 302
    assert 'data-user="vera"' not in web.get("/users").text


def test_no_provider_secret_on_any_page(web, fake, client):
    _add(web, fake)
    client.chat.completions.create(**chat())
    for path in (
        "/",
        "/keys",
        "/keys/new",
        "/keys/import",
        "/keys/1/edit",
        "/keys/1/delete",
        "/profiles",
        "/logs",
        "/logs/1/attempts",
        "/usage",
        "/usage?by=key",
        "/audit",
        "/users",
        "/prices",
        "/client-keys",
        "/partials/cards",
        "/partials/key-bars",
        "/partials/profile-bars",
        "/partials/errors",
    ):
        response = web.get(path)
        assert response.status_code == 200, path
        assert SECRET not in response.text and SECRET[-12:] not in response.text, path


def test_unknown_page_is_a_readable_404(web):
    response = web.get("/no-such-page")
    assert response.status_code == 404
    assert "There is nothing here" in response.text and "Traceback" not in response.text


@pytest.mark.both_databases
def test_money_is_shown_exactly(app):
    from blueprints.dashboard import _usd

    assert _usd(0) == "$0.00" and _usd(1) == "$0.000001" and _usd(1_234_560_000) == "$1,234.56"
    assert isinstance(date.today(), date)


@pytest.mark.sqlite_only  # SQLite's EXPLAIN QUERY PLAN
def test_overview_never_scans_the_request_log(web, app, fake, client):
    """P5 by construction: every query behind the overview and its partials reads the
    roll-ups, the keys, or the partial index of failures, never the whole request log.
    (bench/overview.py times it with 1,000,000 rows.)"""
    from sqlalchemy import event

    _add(web, fake)
    client.chat.completions.create(**chat())
    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        for path in ("/", "/partials/cards", "/partials/key-bars", "/partials/errors"):
            assert web.get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    touching = [(s, p) for s, p in statements if "request_logs" in s]
    assert touching, "the recent-errors query was not seen"
    with app.app_context():
        raw = db.engine.raw_connection()
        try:
            for statement, parameters in touching:
                plan = raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
                details = " ".join(row[-1] for row in plan)
                assert "USING INDEX ix_request_logs_errors" in details, details
        finally:
            raw.close()


def test_the_key_form_carries_the_pool_settings(web, fake, admin):
    """Weight, priority tier and the Responses API: saved from the form, shown on edit,
    refused with a message on the form when out of range."""
    assert _add(web, fake, weight="4", priority="2", responses_api="on").status_code == 302
    key = admin.key(1)
    assert (key["weight"], key["priority"], key["responses_api"]) == (4, 2, True)
    form = web.get("/keys/1/edit").text
    assert 'name="weight" value="4"' in form and 'name="priority" value="2"' in form
    assert 'name="responses_api" checked' in form
    refused = _add(web, fake, secret="sk-dash-cccccccccccc3333", weight="0")
    assert refused.status_code == 422 and "from 1 to 1000" in refused.text
    data = {
        "name": "main",
        "provider": "openai",
        "profile": "default",
        "secret": "",
        "base_url": fake.base_url,
        "models": "*",
        "weight": "",
        "priority": "",
    }
    assert web.post("/keys/1/edit", data).status_code == 302  # box unticked: off
    key = admin.key(1)
    assert (key["weight"], key["priority"], key["responses_api"]) == (None, None, False)

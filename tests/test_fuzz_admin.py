"""Bad input on every admin route (issue item 7): never a 5xx, never a traceback.

The routes are not listed here: every `/api/admin/...` rule of `app.url_map`, every
dashboard POST (with the fields of the forms the dashboard itself renders) and every GET
page and `/partials` fragment is found at run time, so a new route is fuzzed without
editing this file. Each test collects every bad answer and fails with the list.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import BigInteger, Integer, String, Text

from extensions import db
from gateway import validation
from tests.conftest import MASTER_KEY, chat

ROOT = Path(__file__).resolve().parent.parent
MAX_INT = 2**63 - 1
ARGUMENT = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
TRACEBACK = re.compile(rb"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")

HUGE_IDS = ("9223372036854775808", "99999999999999999999", "1" + "0" * 40)
ODD_IDS = ("-1", "-9223372036854775809", "0", "1.5", "%C2%B2", "1e3")
ODD_SEGMENTS = ("x" * 3000, "%00", "%C3%BC%E5%90%8D", "..", "%2F%2F", "a%0Ab")
BAD_INTS = (2**63, 10**20, -(2**63) - 1, -1, 1.5, 1e308, "9" * 40, "²", True, None, {})
BAD_STRINGS = ("", "x" * 20_000, "nul\x00byte", "ü名前\u202e", 7, [], {})
BAD_DATES = (
    "0001-01-05",
    "9999-12-31",
    "2026-13-45",
    "99999999999999999999",
    "²",
    "x" * 3000,
    "\x00ü",
)
BAD_FORM_VALUES = (
    "9223372036854775808",
    "-1",
    "1.5",
    "²",
    "",
    "\x00",
    "x" * 5000,
    "ü名前",
    "0001-01-01T00:00",
    "9999-12-31T23:59",
)


def nested(depth: int, kind: str = "list") -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


RAW_BODIES = (
    b"not json",
    b"",
    b"[]",
    b"[1, 2]",
    b"null",
    b'"text"',
    b"1e999",
    b'{"a": ',
    b"\xff\xfe\x00",
    b'{"name": "\\ud800"}',
    nested(300),
    nested(300, "object"),
    nested(5000),
    nested(100_000),
)

# Valid bodies of routes whose checks stop at a missing required field; a route not here
# is fuzzed from an empty object.
EXAMPLES = {
    ("POST", "/api/admin/keys"): {
        "provider": "openai",
        "name": "fuzz",
        "secret": "sk-fuzz-0000000000000000",
        "base_url": "http://127.0.0.1:9/v1",
    },
    ("POST", "/api/admin/client-keys"): {"name": "fuzz", "max_budget": "1"},
    ("POST", "/api/admin/routes"): {"name": "fuzz-route", "target": "gpt-4o-mini"},
    ("PUT", "/api/admin/prices/<path:model>"): {"input_per_mtok": "1", "output_per_mtok": "2"},
    ("POST", "/api/admin/client-keys/<int:key_id>/topup"): {"amount": "1.00"},
}
SAMPLE_ARGUMENTS = {"int": "1", "path": "gpt-4o-mini", "default": "default"}
# Tables an admin never writes field by field through a form or the API.
INTERNAL_TABLES = {
    "request_logs",
    "attempts",
    "usage_daily",
    "job_runs",
    "login_throttle",
    "audit_log",
    "users",
    "credit_transactions",
    "budget_alerts",
}


def int_fields() -> list[str]:
    """Every integer an admin can send: integer columns, by their API name."""
    names = {"amount", "active"}
    for table in db.metadata.sorted_tables:
        if table.name in INTERNAL_TABLES:
            continue
        for column in table.columns:
            if isinstance(column.type, Integer | BigInteger) and not (
                column.primary_key or column.foreign_keys
            ):
                names.add(column.name.removesuffix("_micros"))
    return sorted(names)


def string_fields() -> list[str]:
    names = {"secret", "profile", "models", "fallbacks", "target", "expires_at", "strategy"}
    for table in db.metadata.sorted_tables:
        if table.name in INTERNAL_TABLES:
            continue
        for column in table.columns:
            if isinstance(column.type, String | Text) and not column.foreign_keys:
                names.add(column.name)
    return sorted(names)


def query_names(*sources: str) -> list[str]:
    """The query parameters the given modules read (`args.get("x")`, `_x_arg("x", …)`)."""
    pattern = re.compile(r'(?:args\.get\(\s*|_arg\(\s*)"(\w+)"')
    names = set()
    for source in sources:
        names |= set(pattern.findall((ROOT / source).read_text()))
    return sorted(names)


def fill(rule: str) -> str:
    """The rule's path with a sample for each argument: id 1, a model, the default profile."""
    return ARGUMENT.sub(lambda m: SAMPLE_ARGUMENTS.get(m.group(1) or "default", "1"), rule)


def converters(rule: str) -> set[str]:
    return {match.group(1) or "default" for match in ARGUMENT.finditer(rule)}


def destructive_last(item) -> tuple:
    rule, method = item
    path = rule.rule
    return (method == "DELETE" or "delete" in path or "revoke" in path, path, method)


def rules(app, prefix: str, methods: set[str], exclude: tuple[str, ...] = ()) -> list:
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(prefix) or rule.rule.startswith(exclude):
            continue
        for method in sorted((rule.methods or set()) & methods):
            found.append((rule, method))
    return sorted(found, key=destructive_last)


class Problems(list):
    """What went wrong, one line per bad answer."""

    server_errors = 0

    def check(self, label: str, status: int, body: bytes, api: bool, allow=()) -> None:
        if status >= 500 and status not in allow:
            self.server_errors += 1
            self.append(f"{label} -> {status}: {body[:200]!r}")
        if TRACEBACK.search(body):
            self.append(f"{label} -> traceback in the body")
        if api and status >= 400:
            try:
                message = json.loads(body)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                self.append(f"{label} -> {status} without the JSON error shape: {body[:120]!r}")
            else:
                if not isinstance(message, str) or not message:
                    self.append(f"{label} -> {status} with an empty message")

    def report(self) -> str:
        head = f"{len(self)} bad answers ({self.server_errors} were 5xx):\n"
        return head + "\n".join(self[:60])


@pytest.fixture
def world(admin, app):
    """One of each object, so routes with `<int:id>` reach their checks with id 1."""
    key = admin.add_key("sk-fuzz-world-000000000000", "http://127.0.0.1:9/v1", name="world")
    created = admin.call("POST", "/client-keys", {"name": "world", "max_budget": "1.00"})
    route = admin.call("POST", "/routes", {"name": "world-route", "target": "gpt-4o-mini"})
    price = admin.call(
        "PUT", "/prices/gpt-4o-mini", {"input_per_mtok": "1", "output_per_mtok": "1"}
    )
    assert (created.status, route.status, price.status) == (201, 201, 200)
    assert key["id"] == created.json()["id"] == route.json()["id"] == 1
    return app


def test_the_enumeration_finds_the_routes(world):
    """The fuzz below covers what the app serves: these are a sample, not the list."""
    admin_rules = {rule.rule for rule, _ in rules(world, "/api/admin", {"GET", "POST"})}
    assert {"/api/admin/keys/<int:key_id>", "/api/admin/statistics"} <= admin_rules
    assert len(rules(world, "/api/admin", {"GET", "POST", "PUT", "DELETE"})) >= 30
    assert "rpm_limit" in int_fields() and "max_budget" in int_fields()
    assert {"from", "to", "limit"} <= set(query_names("blueprints/admin_api.py"))


@pytest.mark.both_databases
def test_ids_out_of_range_are_404_on_every_route(world, admin, web):
    """Ids past 2^63 (SQLite's integers) are 404 on the API, the dashboard and partials;
    negative and odd ids never a 5xx."""
    problems = Problems()
    for rule, method in rules(world, "/", {"GET", "POST", "PUT", "DELETE"}):
        if "int" not in converters(rule.rule):
            continue
        api = rule.rule.startswith("/api/")
        for value in HUGE_IDS + ODD_IDS:
            path = ARGUMENT.sub(value, rule.rule)
            label = f"{method} {path[:80]}"
            if api:
                response = admin.http.request(
                    method,
                    f"{admin.base}{path}",
                    headers={"Authorization": f"Bearer {MASTER_KEY}"},
                )
                status, body = response.status, response.data
            else:
                response = (
                    web.post(path) if method == "POST" else web.client.open(path, method=method)
                )
                status, body = response.status_code, response.data
            problems.check(label, status, body, api)
            if value in HUGE_IDS and status != 404:
                problems.append(f"{label} -> {status}, not 404")
    assert not problems, problems.report()


def test_odd_path_segments_never_fail(world, admin):
    """Names and model ids in the path: long, NUL, unicode, slashes."""
    problems = Problems()
    for rule, method in rules(world, "/api/admin", {"GET", "PUT", "DELETE"}):
        if not converters(rule.rule) - {"int"}:
            continue
        for value in ODD_SEGMENTS:
            path = ARGUMENT.sub(lambda m, v=value: "1" if m.group(1) == "int" else v, rule.rule)
            response = admin.http.request(
                method,
                f"{admin.base}{path}",
                json={"input_per_mtok": "1", "output_per_mtok": "1"},
                headers={"Authorization": f"Bearer {MASTER_KEY}"},
            )
            problems.check(f"{method} {path[:80]}", response.status, response.data, api=True)
    assert not problems, problems.report()


def _send(admin, method: str, path: str, raw: bytes):
    return admin.http.request(
        method,
        f"{admin.base}{path}",
        body=raw,
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
    )


def test_bodies_that_are_not_objects_never_fail(world, admin):
    """Not JSON, arrays, scalars, broken UTF-8, lone surrogates, deep nesting."""
    problems = Problems()
    for rule, method in rules(world, "/api/admin", {"POST", "PUT", "DELETE"}):
        path = fill(rule.rule)
        for raw in RAW_BODIES:
            response = _send(admin, method, path, raw)
            problems.check(f"{method} {path} {raw[:20]!r}…", response.status, response.data, True)
            deep = raw.startswith((b"[[[[", b'{"a":{"a":')) and len(raw) > 400
            if deep and response.status != 400:  # refused even where the body is not read
                problems.append(f"{method} {path} deep JSON -> {response.status}, not 400")
    assert not problems, problems.report()


def test_bad_values_in_every_field_never_fail(world, admin):
    """Each known int field with huge, negative, float, string, bool, null, list values;
    each string field with empty, long, NUL, unicode, lone surrogates, wrong types. A 400
    names the field; a 2xx never stored a number SQLite cannot hold."""
    problems = Problems()
    cases = [(f, v) for f in int_fields() for v in BAD_INTS]
    cases += [(f, v) for f in string_fields() for v in BAD_STRINGS]
    for rule, method in rules(world, "/api/admin", {"POST", "PUT"}):
        path = fill(rule.rule)
        example = EXAMPLES.get((method, rule.rule), {})
        unknown = set()  # fields the route refuses by name: one probe each, not every value
        for field in {f for f, _ in cases}:
            probe = _send(admin, method, path, json.dumps({**example, field: 1}).encode())
            if probe.status == 400 and "nknown" in probe.json()["error"]["message"]:
                unknown.add(field)
        for field, value in cases:
            if field in unknown:
                continue
            response = _send(admin, method, path, json.dumps({**example, field: value}).encode())
            label = f"{method} {path} {field}={str(value)[:24]!r}"
            problems.check(label, response.status, response.data, True)
            huge = isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT
            if huge and response.status == 400:
                # Refused for another reason (the route ignores the field): not its name.
                control = _send(admin, method, path, json.dumps(example).encode())
                if control.data == response.data:
                    continue
                error = response.json()["error"]
                if error["param"] != field and field not in error["message"]:
                    problems.append(f"{label} -> 400 not naming the field: {error}")
            elif huge and response.status < 300 and str(value).encode() in response.data:
                problems.append(f"{label} -> {response.status} and the value was kept")
    assert not problems, problems.report()


@pytest.mark.both_databases
def test_huge_ints_in_limits_are_400_naming_the_field(world, admin):
    """The cases the issue found, exactly: a limit past 2^63 is a 400 naming the field."""
    new_key = EXAMPLES[("POST", "/api/admin/keys")]
    cases = [
        ("POST", "/keys", {**new_key, "rpm_limit": 10**20}, "rpm_limit"),
        ("PUT", "/keys/1", {"daily_token_limit": 2**63}, "daily_token_limit"),
        ("PUT", "/keys/1", {"model_limits": {"gpt-4o": {"rpm": 2**64}}}, "model_limits"),
        ("POST", "/client-keys", {"name": "x", "tpm_limit": 2**63}, "tpm_limit"),
        ("PUT", "/client-keys/1", {"max_parallel_requests": -(2**63) - 1}, "max_parallel_requests"),
        ("PUT", "/profiles/default", {"wait_for_key_seconds": 10**30}, "wait_for_key_seconds"),
        (
            "PUT",
            "/prices/gpt-4o",
            {"input_per_mtok": 2**63, "output_per_mtok": 1},
            "input_per_mtok",
        ),
        ("POST", "/client-keys/1/topup", {"amount": 10**19}, "amount"),
    ]
    for method, path, body, field in cases:
        response = admin.call(method, path, body)
        assert response.status == 400, (path, body, response.data)
        error = response.json()["error"]
        assert error["param"] == field and field in error["message"], error
    # Nothing was changed or created.
    assert admin.key(1)["daily_token_limit"] is None and admin.key(1)["rpm_limit"] is None
    assert len(admin.call("GET", "/keys").json()["data"]) == 1
    assert admin.call("GET", "/client-keys/1").json()["max_budget"] == "1.000000"


def test_dates_and_query_strings_out_of_range_never_fail(world, admin, web):
    """Every GET of the API, the dashboard and /partials with every query parameter they
    read set to out-of-range and malformed dates, huge numbers, long strings, NUL."""
    problems = Problems()
    api_names = query_names("blueprints/admin_api.py")
    page_names = query_names(
        "blueprints/dashboard.py", "blueprints/partials.py", "gateway/ledger/reports.py"
    )
    page_names = sorted({*page_names, "since", "until", "key", "status", "before", "by"})
    for rule, _ in rules(world, "/", {"GET"}, exclude=("/v1", "/api/v1", "/static")):
        api = rule.rule.startswith("/api/")
        if not api and rule.endpoint.startswith("auth."):
            continue
        path = fill(rule.rule)
        for name in api_names if api else page_names:
            for value in BAD_DATES:
                url = f"{path}?{urlencode({name: value})}"
                if api:
                    response = admin.call("GET", url.removeprefix("/api/admin"))
                    status, body = response.status, response.data
                else:
                    response = web.get(url)
                    status, body = response.status_code, response.data
                problems.check(f"GET {url[:90]}", status, body, api)
    assert not problems, problems.report()


@pytest.mark.both_databases
def test_statistics_with_dates_out_of_range_is_400(world, admin):
    for query in ("to=0001-01-05", "from=0001-01-01&to=0001-01-01", "to=9999-12-31"):
        response = admin.call("GET", f"/statistics?{query}")
        assert response.status == 400, (query, response.data)
        assert response.json()["error"]["param"] in ("from", "to")


class _Forms(HTMLParser):
    """The POST forms of a page: action → field names and their default values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, str]] = {}
        self._current: dict[str, str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            if (attrs.get("method") or "get").lower() == "post" and attrs.get("action"):
                self._current = self.forms.setdefault(attrs["action"], {})
            else:
                self._current = None
        elif tag in ("input", "select", "textarea") and self._current is not None:
            name = attrs.get("name")
            if name and name != "csrf_token":
                self._current.setdefault(name, attrs.get("value") or "")

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def _dashboard_forms(app, web) -> dict[str, dict[str, str]]:
    """Crawl every dashboard page (ids: 1) and collect the forms it renders."""
    parser = _Forms()
    for rule, _ in rules(app, "/", {"GET"}, exclude=("/v1", "/api/", "/static", "/partials")):
        if rule.endpoint.startswith("auth.") or rule.endpoint == "dashboard.export_config":
            continue
        response = web.get(fill(rule.rule))
        if response.status_code == 200 and response.mimetype == "text/html":
            parser.feed(response.text)
    return parser.forms


def test_dashboard_forms_never_fail(world, web):
    """Every dashboard POST with each field of its form set to bad values in turn: a page
    or a message, never a 5xx or a traceback."""
    forms = _dashboard_forms(world, web)
    assert "/keys" in forms and "/client-keys/1/topup" in forms  # the crawl works
    everything = sorted({name for fields in forms.values() for name in fields})
    problems = Problems()
    for rule, _ in rules(world, "/", {"POST"}, exclude=("/v1", "/api/")):
        if rule.endpoint.startswith("auth."):
            continue  # login and logout: test_dashboard_auth.py
        path = fill(rule.rule)
        defaults = forms[path] if path in forms else dict.fromkeys(everything, "")
        for field in defaults or ["unexpected"]:
            for value in BAD_FORM_VALUES:
                response = web.post(path, {**defaults, field: value})
                label = f"POST {path} {field}={value[:24]!r}"
                problems.check(label, response.status_code, response.data, api=False)
    assert not problems, problems.report()


@pytest.mark.parametrize(
    ("kind", "text", "where"),
    [
        ("limits", "keys:\n- id: 99999999999999999999\n", "keys[0].id"),
        ("limits", "keys:\n- id: -5\n", "keys[0].id"),
        ("limits", "keys:\n- id: 1\n  tpm_limit: 99999999999999999999\n", "tpm_limit"),
        ("limits", "keys:\n- id: 1\n  rpm_limit: '²'\n", "rpm_limit"),
        ("limits", "keys:\n- id: 1\n  expires_at: 9999-12-31T23:00:00-12:00\n", "expires_at"),
        (
            "limits",
            "profiles:\n  default:\n    wait_for_key_seconds: 10000000000000000000000\n",
            "wait_for_key_seconds",
        ),
        ("models", "routes:\n- name: a\n  target: " + "[" * 300 + "]" * 300 + "\n", "target"),
    ],
)
def test_configuration_files_with_numbers_out_of_range(world, web, kind, text, where):
    """The Routes page's import (YAML, so any depth and any integer): a message naming the
    entry, nothing imported."""
    response = web.post("/config/import", {"kind": kind, "text": text, "action": "check"})
    assert response.status_code == 422, response.text[:300]
    assert where in response.text and "Traceback" not in response.text


# -- deep JSON on the proxy ----------------------------------------------------------------


@pytest.mark.parametrize("depth", [255, 256, 300, 1023, 1024, 5000, 200_000])
def test_a_too_deep_chat_body_is_a_400(admin, fake, server, http, depth):
    """Nested 256–1023 levels used to parse, then fail to serialise (500, no log row)."""
    admin.add_key("sk-deep-00000000000000000", fake.base_url)
    content = nested(depth - 1).decode()  # in the body's object: `depth` levels
    raw = json.dumps(chat(content="x")).encode()[:-1] + b', "metadata": ' + content.encode() + b"}"
    response = http.request(
        "POST",
        f"{server.url}/v1/chat/completions",
        body=raw,
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
    )
    assert response.status == 400, response.data[:300]
    error = response.json()["error"]
    assert error["code"] == "body_too_deep" and error["type"] == "invalid_request_error"
    assert "nested" in error["message"]
    assert fake.requests == []


def test_the_deepest_allowed_chat_body_still_goes_through(admin, fake, server, http):
    """254 levels (MAX_JSON_DEPTH) is forwarded: the check refuses only what would fail."""
    admin.add_key("sk-deep-00000000000000000", fake.base_url)
    assert validation.MAX_JSON_DEPTH == 254
    raw = json.dumps(chat()).encode()[:-1] + b', "metadata": ' + nested(253) + b"}"
    response = http.request(
        "POST",
        f"{server.url}/v1/chat/completions",
        body=raw,
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
    )
    assert response.status == 200, response.data[:300]
    assert len(fake.requests) == 1


# -- a write-locked database ----------------------------------------------------------------


@pytest.fixture
def settings(settings):
    settings["DB_BUSY_TIMEOUT"] = 0.3  # a locked database answers in 0.3 s, not 10 s
    return settings


class ExclusiveLock:
    """Another process's `BEGIN EXCLUSIVE` on the test's database, until released."""

    def __init__(self, app) -> None:
        self.conn = sqlite3.connect(
            Path(app.instance_path) / "keyrelay.db", timeout=5, check_same_thread=False
        )
        self.conn.isolation_level = None

    def __enter__(self):
        self.conn.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc):
        self.conn.execute("ROLLBACK")
        self.conn.close()


def _count(app, table: str) -> int:
    with sqlite3.connect(Path(app.instance_path) / "keyrelay.db") as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608


@pytest.mark.sqlite_only  # SQLite's lock; PostgreSQL's: tests/test_postgres.py
def test_a_locked_database_is_a_503_and_loses_nothing(world, admin, web):
    audit_before = _count(world, "audit_log")
    with ExclusiveLock(world):
        started = time.monotonic()
        response = admin.call("POST", "/routes", {"name": "locked", "target": "gpt-4o"})
        topped = admin.call("POST", "/client-keys/1/topup", {"amount": "1.00"})
        page = web.post("/routes", {"name": "locked-form", "target": "gpt-4o"})
        referred = web.post(
            "/client-keys/1/topup",
            {"amount": "1.00"},
            headers={"Referer": "http://localhost/client-keys"},
        )
        fragment = web.post("/keys/1/toggle", htmx=True)
        elapsed = time.monotonic() - started
    for answer in (response, topped):
        assert answer.status == 503, answer.data
        assert answer.headers["Retry-After"].isdigit()
        error = answer.json()["error"]
        assert error["code"] == "database_busy" and "busy" in error["message"]
    # The dashboard: the message on the page the form is on, not an error page.
    for answer, form in ((page, 'action="/routes"'), (referred, 'action="/client-keys/1/topup"')):
        assert answer.status_code == 503 and answer.headers["Retry-After"].isdigit()
        assert "The database is busy" in answer.text and form in answer.text
        assert "Not done" not in answer.text and "Traceback" not in answer.text
    # htmx: a fragment for the flash area (base.html lets htmx swap a 503).
    assert fragment.status_code == 503 and fragment.headers["HX-Retarget"] == "#flash"
    assert "The database is busy" in fragment.text
    assert admin.key(1)["status"] == "active"  # the toggle did not happen
    assert elapsed < 8  # the test setting, not the 10 s default
    # Nothing half-done: no route, no audit row, no credit; then the retry works.
    assert _count(world, "audit_log") == audit_before
    assert _count(world, "credit_transactions") == 0
    names = [r["name"] for r in admin.call("GET", "/routes").json()["data"]]
    assert "locked" not in names and "locked-form" not in names
    assert admin.call("GET", "/client-keys/1").json()["max_budget"] == "1.000000"
    assert admin.call("POST", "/routes", {"name": "locked", "target": "gpt-4o"}).status == 201
    assert admin.call("POST", "/client-keys/1/topup", {"amount": "1.00"}).status == 200
    assert admin.call("GET", "/client-keys/1").json()["max_budget"] == "2.000000"


@pytest.mark.sqlite_only  # SQLite's lock held from outside
def test_a_lock_released_in_time_is_waited_for(world, admin):
    """Within the busy timeout a locked database is waited for, not refused."""
    lock = ExclusiveLock(world)
    lock.__enter__()
    releaser = threading.Timer(0.1, lock.__exit__, (None, None, None))
    releaser.start()
    try:
        response = admin.call("POST", "/routes", {"name": "waited", "target": "gpt-4o"})
    finally:
        releaser.join()
    assert response.status == 201, response.data

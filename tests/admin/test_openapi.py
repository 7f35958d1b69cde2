"""The admin API's OpenAPI document: valid, complete, and true of the live API
(schemathesis over loopback HTTP, every one of its checks: no 500, no answer or status the
document does not allow, no request the document forbids accepted, none it allows refused)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import schemathesis
import urllib3
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import CacheConfig, SchemathesisConfig
from schemathesis.engine import Status, events, from_schema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import tests.openapi_hooks  # noqa: F401 - registers the rules no schema can state
from tests.conftest import MASTER_KEY, ManualClock, live_app

# On the seeded objects: the answers, and no valid request refused. (Invalid requests
# accepted: the full run below, which also drops the key from a request to test that.)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    positive_data_acceptance,
]
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
# Per operation (~45 of them), in each phase: the file runs in ~70 s on a slow 2-core
# machine. Derandomized (a fixed seed, one worker): the same cases on every run.
EXAMPLES = 10
SEED = 20
# The operations that call a key's upstream (a key test, a usage sync).
UPSTREAM_CALLS = r"/(test|sync)(/|$)"
# Nothing listens there: a key test or usage sync fails at once, without the network.
DEAD_UPSTREAM = "http://127.0.0.1:9/v1"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One app for the module, with a key, a client key, a route, a price, an account."""
    with _seeded_app(tmp_path_factory.mktemp("openapi")) as found:
        yield found


@pytest.fixture
def fresh(tmp_path):
    """An app of its own, seeded the same way."""
    with _seeded_app(tmp_path) as found:
        yield found


@contextmanager
def _seeded_app(folder):
    settings_ = {
        "INSTANCE_PATH": str(folder / "instance"),
        "MASTER_KEY": MASTER_KEY,
        "SECRET_KEY": Fernet.generate_key().decode(),
        "CLOCK": ManualClock(),
        "READ_TIMEOUT": 1.0,
        "CONNECT_TIMEOUT": 1.0,
        "REQUEST_DEADLINE": 5.0,
        "SCHEDULER": False,
    }
    with live_app(settings_) as (_app, server):
        yield server.url, _seed(server.url)


def _seed(url: str) -> dict:
    http = urllib3.PoolManager(retries=False)

    def post(path, body, method="POST"):
        answer = http.request(method, f"{url}/api/admin{path}", json=body, headers=AUTH)
        assert answer.status in (200, 201), answer.data
        return answer.json()

    key = post("/keys", {"provider": "openai", "name": "k", "secret": "sk-seed-0001",
                         "base_url": DEAD_UPSTREAM, "daily_cost_limit": "5.00"})  # fmt: skip
    client = post("/client-keys", {"name": "app", "max_budget": "10", "rpm_limit": 5})
    route = post("/routes", {"name": "smart", "target": "gpt-4o", "fallbacks": ["gpt-4o-mini"]})
    post("/prices/gpt-4o", {"input_per_mtok": "2.5", "output_per_mtok": "10"}, "PUT")
    account = post("/rovodev-keys", {"email": "a@example.com", "apiToken": "tok-seed-1",
                                     "baseUrl": DEAD_UPSTREAM})  # fmt: skip
    member = post("/members", {"email": "member@example.com", "password": "member-pass-1"})
    return {"key": key["id"], "client": client["id"], "route": route["id"], "acct": account["id"],
            "member": member["id"]}  # fmt: skip


def _pinned(path: str, ids: dict) -> dict:
    """Path parameters naming the seeded objects, so answers have bodies to check."""
    if path.startswith("/api/admin/client-keys/"):
        return {"key_id": ids["client"]}
    if path.startswith("/api/admin/members/"):
        return {"member_id": ids["member"]}
    if path.startswith("/api/admin/rovodev-keys/"):
        return {"key_id": ids["acct"], "profile": "default"}
    return {"key_id": ids["key"], "route_id": ids["route"], "model": "gpt-4o", "name": "default"}


def _rank(operation) -> tuple:
    """Reads first, then calls that test and sync, then changes, deletes last."""
    method, path = operation.method.upper(), operation.path
    order = {"GET": 0, "POST": 2, "PUT": 3, "PATCH": 3, "DELETE": 4}[method]
    if path.endswith(("/test", "/sync")) or "/test/" in path:
        order = 1
    return order, path


def _document(url: str) -> dict:
    answer = urllib3.request("GET", f"{url}/api/admin/openapi.json")
    assert answer.status == 200
    return answer.json()


def test_document_is_valid_openapi_and_public(live):
    url, _ = live
    document = _document(url)
    validate(document)  # the OpenAPI 3.0 meta-schema
    assert document["components"]["securitySchemes"]["masterKey"]["scheme"] == "bearer"
    create = document["paths"]["/api/admin/keys"]["post"]["requestBody"]
    body = create["content"]["application/json"]["schema"]
    # From the validator's own tables: a new field there shows up here.
    assert body["required"] == ["provider", "name", "secret"]
    assert body["properties"]["weight"] == {"type": "integer", "minimum": 1, "maximum": 1000,
                                            "nullable": True}  # fmt: skip
    assert "anthropic" in body["properties"]["provider"]["enum"]


def test_document_lists_every_admin_route(live):
    """A route added under /api/admin without an entry in the document fails here."""
    from blueprints.openapi_docs import admin_rules
    from gateway.admin.openapi import path_of

    url, _ = live
    paths = _document(url)["paths"]
    app = create_probe_app()
    rules = admin_rules(app)
    assert len(rules) > 40
    for rule, endpoint, methods, _doc in rules:
        path = path_of(rule)[0]
        for method in methods:
            assert method.lower() in paths.get(path, {}), f"{method} {rule} ({endpoint})"


def create_probe_app():
    """The app's url_map (the same blueprints the server registers)."""
    from flask import Flask

    from app import register_blueprints

    app = Flask("probe")
    register_blueprints(app)
    return app


def test_docs_page_renders_the_vendored_swagger_ui(live):
    url, _ = live
    page = urllib3.request("GET", f"{url}/api/admin/docs")
    assert page.status == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.data.decode()
    assert "<script>" not in html  # no inline script: the CSP would block it
    for asset in ("vendor/swagger-ui-5.35.0.bundle.js", "vendor/swagger-ui-5.35.0.css",
                  "openapi-docs.js"):  # fmt: skip
        assert asset in html
        assert urllib3.request("GET", f"{url}/static/{asset}").status == 200
    assert 'data-spec-url="/api/admin/openapi.json"' in html


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(live):
    url, ids = live
    schema = schemathesis.openapi.from_url(f"{url}/api/admin/openapi.json")
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=_rank)
    assert len(operations) > 40
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        pinned = {k: v for k, v in _pinned(operation.path, ids).items() if k in names}
        _exercise(operation, url, pinned)


def _exercise(operation, url: str, pinned: dict) -> None:
    """EXAMPLES generated requests, valid and invalid (some on a seeded object), each
    checked; the first failure fails the test with schemathesis's report and a curl line."""
    strategy = operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE)
    if pinned:
        strategy = strategy | operation.as_strategy(path_parameters=pinned)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case) -> None:
        response = case.call(base_url=url, headers=AUTH, timeout=10)
        case.validate_response(response, checks=CHECKS)

    run()


def test_schemathesis_run_with_every_check_finds_nothing(fresh):
    """`st run --checks all` in-process: examples, coverage (boundary and invalid values
    of every field), fuzzing (positive and negative) and stateful (linked calls) phases.
    The calls that reach a key's upstream (test, usage sync) go first, while only the
    seeded keys exist: the keys generated later name any host, and a sync would call
    every one of them (a machine's own ports included)."""
    url, _ = fresh
    found, tested = [], []
    for reaches_upstream in (True, False):
        schema = _schema_for_a_full_run(url)
        pick = schema.include if reaches_upstream else schema.exclude
        tested.append(0)
        for event in from_schema(pick(path_regex=UPSTREAM_CALLS)).execute():
            if isinstance(event, events.ScenarioFinished):
                tested[-1] += len(event.recorder.cases)
                found.extend(_failures(event))
            elif isinstance(event, events.NonFatalError | events.FatalError):
                found.append(f"{event.label}: {event.info.format()}")
    assert not found, "\n\n".join(found)
    assert tested[0] > 100 and tested[1] > 1500, tested


def _schema_for_a_full_run(url: str):
    """The document, set up as `st run --checks all --mode all -n EXAMPLES --seed SEED
    --workers 1` with the master key."""
    # No crash cache (.schemathesis/): every run the same cases, no file left behind.
    config = SchemathesisConfig(cache=CacheConfig(enabled=False))
    config.update(seed=SEED, max_failures=None)
    project = config.projects.override
    project.update(headers=AUTH, workers=1, request_timeout=10)
    project.phases.update(phases=["examples", "coverage", "fuzzing", "stateful"])
    project.checks.update(included_check_names=["all"])
    project.generation.update(
        modes=["positive", "negative"], max_examples=EXAMPLES, database="none"
    )
    return schemathesis.openapi.from_url(f"{url}/api/admin/openapi.json", config=config)


def _failures(event) -> list[str]:
    """Each failed check of a scenario: the operation, the check, its report, a curl line."""
    failed = []
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                failure, curl = check.failure_info.failure, check.failure_info.code_sample
                failed.append(f"{event.label} [{check.name}] {failure.title}\n"
                              f"{failure.message}\n{curl}")  # fmt: skip
    return failed

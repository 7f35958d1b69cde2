"""Budget alerts (F36): Slack-compatible posts to a webhook when a client key's spend reaches
a threshold of its budget, once per threshold per period. The receiver is a real HTTP
server on loopback; spend comes from real chat requests; periods move with the clock."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from sqlalchemy import func, select

from app import create_app
from extensions import db
from gateway.ledger.alerts import parse_thresholds, reached
from models import BudgetAlert
from tests.conftest import chat
from tests.fake_upstream import Behaviour
from tests.limits.test_budgets import PRICE, SECRET, budget_key, sdk

pytestmark = pytest.mark.both_databases

HOOK_PATH = "/services/T0001/B0001/hook-secret-part"
# The fake reports 8 prompt tokens, as KeyRelay estimates them, and 5 completion tokens
# (max_tokens=5): each request reserves and costs exactly 13 x 1000 micro-dollars, so five
# of them spend a $0.065 budget to the last micro-dollar.
REQUEST_MICROS = 13_000
BUDGET = "0.065"


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps each JSON body posted to it. `release`
    can hold its answers back, `arrived` says a post came in."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrived.set()
                receiver.release.wait(10)
                assert self.path == HOOK_PATH
                assert self.headers["Content-Type"] == "application/json"
                receiver.posts.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")  # what Slack answers

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}{HOOK_PATH}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.closed = False

    def thresholds(self) -> list[int]:
        return [post["keyrelay"]["threshold"] for post in self.posts]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.release.set()
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)


@pytest.fixture
def receiver():
    hook = Receiver()
    yield hook
    hook.close()


@pytest.fixture
def settings(settings, receiver):
    settings["ALERT_WEBHOOK_URL"] = receiver.url
    return settings


@pytest.fixture
def alerts(app):
    sender = app.extensions["keyrelay"].alerts
    yield sender
    sender.close()


@pytest.fixture
def spender(admin, server, fake, alerts):
    """A priced profile and a client key with an hourly $0.065 budget; `spend(n)` makes n
    requests with it and waits for the alert checks they caused."""
    admin.add_key(SECRET, fake.base_url, name="main")
    fake.set_behaviour(SECRET, Behaviour.ok(prompt_tokens=8))
    assert admin.call("PUT", "/prices/gpt-4o-mini", PRICE).status == 200
    created = budget_key(admin, name="app-1", max_budget=BUDGET, budget_duration="1h")
    client = sdk(server, created["key"])

    class Spender:
        key = created

        def call(self) -> None:
            client.chat.completions.create(**chat(), max_tokens=5)

        def spend(self, requests: int = 1) -> None:
            for _ in range(requests):
                self.call()
            assert alerts.flush()

        def refused(self) -> bool:
            try:
                self.spend()
            except openai.RateLimitError as exc:
                assert alerts.flush()
                return exc.body["code"] == "budget_exceeded"
            return False

    return Spender()


def alert_rows(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(BudgetAlert))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("80,100", (80, 100)), (" 95 , 50,95", (50, 95)), ("120", (120,))],
)
def test_thresholds_are_whole_percentages(text, expected):
    assert parse_thresholds(text) == expected


@pytest.mark.parametrize("text", ["", "eighty", "80,x", "0", "-5", "80.5"])
def test_bad_thresholds_are_refused(text):
    with pytest.raises(ValueError, match="KEYRELAY_ALERT_THRESHOLDS"):
        parse_thresholds(text)


@pytest.mark.parametrize(
    ("spent", "expected"),
    [
        (0, []),
        (51_999, []),
        (52_000, [80]),
        (64_999, [80]),
        (65_000, [80, 100]),
        (90_000, [80, 100]),
    ],
)
def test_a_threshold_is_reached_at_its_percentage_exactly(spent, expected):
    assert reached((80, 100), spent, 65_000) == expected


def test_one_alert_per_threshold_per_period(app, receiver, spender, admin, clock):
    spender.spend(3)  # 60%
    assert receiver.posts == []

    spender.spend()  # 80%
    assert receiver.thresholds() == [80]
    assert receiver.posts[0]["text"] == (
        "KeyRelay: client key 'app-1' (#1, profile default) used 80% of its $0.065 budget "
        "for the period 2026-11-23T12:00Z–2026-11-23T13:00Z: $0.052 spent."
    )
    assert receiver.posts[0]["keyrelay"]["spent"] == "0.052000"

    spender.spend()  # 100%, to the micro-dollar
    assert receiver.thresholds() == [80, 100]
    assert "'app-1'" in receiver.posts[1]["text"] and "used 100%" in receiver.posts[1]["text"]
    assert spender.refused()

    # More spend in the same period: the thresholds were claimed for it, no new posts.
    topped = admin.call("POST", f"/client-keys/{spender.key['id']}/topup", {"amount": "0.013"})
    assert topped.status == 200
    spender.spend()  # $0.078 of $0.078: 100% again
    assert receiver.thresholds() == [80, 100]
    assert alert_rows(app) == 2

    clock.advance(hours=1)  # the next period: spend from zero, alerts can fire again
    spender.spend(4)  # $0.052 of $0.078: 66%
    assert len(receiver.posts) == 2
    spender.spend()  # 83%
    spender.spend()  # 100%
    assert receiver.thresholds() == [80, 100, 80, 100]
    assert "for the period 2026-11-23T13:00Z–2026-11-23T14:00Z" in receiver.posts[2]["text"]
    assert alert_rows(app) == 4


def test_the_post_does_not_hold_up_the_request(receiver, spender, alerts):
    spender.spend(3)
    receiver.release.clear()  # the receiver takes the next post and does not answer

    spender.call()  # the request that reaches 80% returns ...

    assert receiver.arrived.wait(5) and receiver.posts == []
    assert alerts.flush(timeout=0.2) is False  # ... while its alert is still on its way
    receiver.release.set()
    assert alerts.flush()
    assert receiver.thresholds() == [80]


def test_a_receiver_that_is_down_never_breaks_requests(app, receiver, spender, caplog):
    receiver.close()  # nothing listens on its port any more
    caplog.set_level(logging.INFO, logger="gateway.ledger.alerts")

    # 80%, then 100%: both alerts fail to go out. Waited for apart: a check that runs after
    # the fifth request's booking sees 100% at once and sends one alert for both.
    spender.spend(4)
    spender.spend()

    assert spender.refused()  # the budget is still enforced; nothing else changed
    failures = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert failures == [
        "budget alert for client key #1 at 80% not delivered: NewConnectionError",
        "budget alert for client key #1 at 100% not delivered: NewConnectionError",
    ]
    assert not any("hook-secret-part" in r.getMessage() for r in caplog.records)
    assert alert_rows(app) == 2  # at most once: a missed alert is not retried


def test_the_scheduled_check_sees_a_lowered_budget(settings, app, receiver, spender, admin, alerts):
    spender.spend(2)  # $0.026 of $0.065: 40%
    lowered = admin.call("PUT", f"/client-keys/{spender.key['id']}", {"max_budget": "0.026"})
    assert lowered.status == 200

    assert alerts.check_all() == 1  # both thresholds at once: one post, for the highest

    assert receiver.thresholds() == [100]
    assert "used 100% of its $0.026 budget" in receiver.posts[0]["text"]
    assert alert_rows(app) == 2
    assert alerts.check_all() == 0
    restarted = create_app(settings)  # another worker, or after a restart: nothing in memory
    try:
        assert restarted.extensions["keyrelay"].alerts.check_all() == 0
    finally:
        restarted.extensions["keyrelay"].alerts.close()
        restarted.extensions["keyrelay"].close()
    assert receiver.thresholds() == [100]


def test_without_a_webhook_url_there_are_no_alerts(settings):
    settings["ALERT_WEBHOOK_URL"] = None
    app = create_app(settings)
    try:
        assert app.extensions["keyrelay"].alerts is None
    finally:
        app.extensions["keyrelay"].close()

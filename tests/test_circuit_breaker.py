"""The circuit breaker per upstream (seed 001): failures of one upstream host open its
circuit, its keys are passed over while other upstreams serve, and after the cooldown one
probe closes it again or reopens it."""

from __future__ import annotations

import openai
from sqlalchemy import select

from extensions import db
from models import AuditEntry
from tests.conftest import MASTER_KEY, Admin, Web, chat, live_app
from tests.fake_upstream import Behaviour, FakeUpstream

A1, A2, B1 = (
    "sk-circuit-a1-aaaaaaaaaaaa",
    "sk-circuit-a2-aaaaaaaaaaaa",
    "sk-circuit-b1-bbbbbbbbbbbb",
)


def test_a_failing_upstream_is_passed_over_until_a_probe_finds_it_back(settings, clock, http):
    with (
        FakeUpstream(models=["gpt-4o-mini"]) as a,
        FakeUpstream(models=["gpt-4o-mini"]) as b,
        live_app(settings, BREAKER_FAILURES=2, BREAKER_COOLDOWN=30.0, FAILURE_THRESHOLD=100) as (
            app,
            live,
        ),
    ):
        admin = Admin(live.url, http)
        first = admin.add_key(A1, a.base_url, name="a1")
        admin.add_key(A2, a.base_url, name="a2")
        admin.add_key(B1, b.base_url, name="b1")
        for secret in (A1, A2):
            a.set_behaviour(secret, Behaviour.server_error(500))
        sdk = openai.OpenAI(base_url=f"{live.url}/v1", api_key=MASTER_KEY, max_retries=0)

        def ask() -> None:
            assert sdk.chat.completions.create(**chat()).choices[0].message.content

        for _ in range(3):  # upstream A fails twice: its circuit opens; B serves
            ask()
        tried_a = len(a.requests)
        assert tried_a == 2
        for _ in range(5):
            ask()
        assert len(a.requests) == tried_a  # passed over, not even tried
        circuit = admin.key(first["id"])["upstream_circuit"]
        assert circuit["state"] == "open"
        keys_page = Web(app).get("/keys").text  # the dashboard says it too
        assert 'data-circuit="open"' in keys_page and "Upstream failing" in keys_page
        clock.advance(seconds=31)  # half-open: one probe, which fails again
        assert admin.key(first["id"])["upstream_circuit"]["state"] == "half_open"
        half = Web(app).get("/keys").text  # no "until" in the past: it waits for a request
        assert "circuit half-open since" in half and "the next request to it tests it" in half
        assert "circuit half-open until" not in half
        ask()
        ask()
        assert len(a.requests) == tried_a + 1
        assert admin.key(first["id"])["upstream_circuit"]["state"] == "open"
        for secret in (A1, A2):
            a.set_behaviour(secret, Behaviour.ok())
        clock.advance(seconds=31)  # the next probe is answered: closed
        for _ in range(6):
            ask()
        assert admin.key(first["id"])["upstream_circuit"] is None
        assert len(a.requests) > tried_a + 2  # A serves its share again
        sdk.close()
        # Opened once and closed once in the audit log (the failed probe is no news).
        upstream = "/".join(a.base_url.split("/")[:3])
        with app.app_context():
            rows = db.session.execute(
                select(AuditEntry.action, AuditEntry.actor, AuditEntry.target)
                .where(AuditEntry.action.like("circuit.%"))
                .order_by(AuditEntry.id)
            ).all()
        assert [tuple(r) for r in rows] == [
            ("circuit.opened", "system", f"upstream:{upstream}"),
            ("circuit.closed", "system", f"upstream:{upstream}"),
        ]
        audit_page = Web(app).get("/audit").text
        assert "circuit.opened" in audit_page and "circuit.closed" in audit_page


def test_only_failing_upstreams_give_a_503_that_says_so(settings, clock, http):
    with (
        FakeUpstream(models=["gpt-4o-mini"]) as a,
        live_app(settings, BREAKER_FAILURES=1, FAILURE_THRESHOLD=100) as (_, live),
    ):
        admin = Admin(live.url, http)
        admin.add_key(A1, a.base_url)
        a.set_behaviour(A1, Behaviour.server_error(502))
        sdk = openai.OpenAI(base_url=f"{live.url}/v1", api_key=MASTER_KEY, max_retries=0)
        try:
            sdk.chat.completions.create(**chat())
        except openai.APIStatusError as first:
            assert first.status_code == 502
        try:
            sdk.chat.completions.create(**chat())
            raise AssertionError("the open circuit should refuse")
        except openai.APIStatusError as refused:
            assert refused.status_code == 503
            assert "circuit is open" in refused.message
            assert refused.response.headers["Retry-After"] == "30"
        assert len(a.requests) == 1
        sdk.close()


# What another worker does to the shared circuits: a separate process on the same file.
SIBLING = """
import sys, time
from datetime import UTC, datetime
from gateway.policy import Outcome
from gateway.proxy.breaker import Breaker

class Clock:
    def now(self):
        return datetime.fromtimestamp(float(sys.argv[2]), UTC)

breaker = Breaker(Clock(), 2, 30.0, 30.0, path=sys.argv[1])
url = "http://upstream-a:8080/v1"
action = sys.argv[3]
if action == "fail":
    breaker.record(url, Outcome.SERVER_ERROR)
    breaker.record(url, Outcome.SERVER_ERROR)
elif action == "probe-and-hold":
    print(breaker.allow(url), flush=True)
    sys.stdin.read()  # holds the probe until the test closes stdin
elif action == "answer":
    print(breaker.allow(url), flush=True)
    breaker.record(url, Outcome.OK)
"""


class _At:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def now(self):
        from datetime import UTC, datetime

        return datetime.fromtimestamp(self.seconds, UTC)


def _sibling(path, at: float, action: str, **popen):
    import subprocess
    import sys

    args = [sys.executable, "-c", SIBLING, str(path), str(at), action]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, **popen)


def test_every_worker_sees_one_circuit_and_sends_one_probe(tmp_path):
    import subprocess

    from gateway.proxy.breaker import Breaker

    path, url, t0 = tmp_path / "circuits.bin", "http://upstream-a:8080/v1", 1_800_000_000.0
    clock = _At(t0)
    here = Breaker(clock, 2, 30.0, 30.0, path=path)
    assert here.allow(url) and here.state(url) is None
    failing = _sibling(path, t0, "fail")
    failing.communicate()
    assert failing.returncode == 0  # another worker saw two 5xx
    assert not here.allow(url)  # this one passes the upstream over at once
    assert here.allow("http://upstream-b:8080/v1")  # other upstreams serve
    assert here.state(url)["state"] == "open"
    clock.seconds = t0 + 31  # half-open: the sibling takes the one probe
    holder = _sibling(path, t0 + 31, "probe-and-hold", stdin=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "True"
    assert not here.allow(url)  # a probe is out (another worker's)
    holder.communicate()
    assert here.allow(url)  # that worker died without an answer: this one may probe
    here.release(url)
    answered = _sibling(path, t0 + 31, "answer")
    assert answered.communicate()[0].strip() == "True"
    assert answered.returncode == 0
    assert here.state(url) is None and here.allow(url)  # the answer closed it for all


def test_failures_outside_the_window_do_not_open_the_circuit(tmp_path):
    from gateway.policy import Outcome
    from gateway.proxy.breaker import Breaker

    clock = _At(1_800_000_000.0)
    breaker = Breaker(clock, 3, 10.0, 30.0, path=tmp_path / "circuits.bin")
    url = "https://api.example.com/v1"
    for _ in range(2):
        breaker.record(url, Outcome.TIMEOUT)
    clock.seconds += 11  # those two are too old to count
    breaker.record(url, Outcome.CONNECTION_ERROR)
    breaker.record(url, Outcome.SERVER_ERROR)
    assert breaker.allow(url)
    breaker.record(url, Outcome.BAD_RESPONSE)  # three within ten seconds
    assert not breaker.allow(url)
    breaker.record("https://api.example.com/v2", Outcome.OK)  # same host: closes it
    assert breaker.allow(url)
    for _ in range(5):
        breaker.record(url, Outcome.CLIENT_ERROR)  # a client's 4xx is no upstream failure
    assert breaker.allow(url)

"""The circuit breaker per upstream (seed 001): failures of one upstream host open its
circuit, its keys are passed over while other upstreams serve, and after the cooldown one
probe closes it again or reopens it."""

from __future__ import annotations

import openai

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

"""Budgets hold against answers longer than asked: an upstream that ignores `max_tokens`
streams past the reservation, and the gateway ends the stream at the length the budget
reserved (in the client's dialect), so 50 parallel streams spend at most the budget and
one request's reservation."""

from __future__ import annotations

import pytest

from tests.conftest import chat
from tests.fake_upstream import Behaviour
from tests.limits.test_budgets import SECRET, budget_key, sdk, spend
from tests.overspend import PATIENT, RESERVATION, native, priced_claude, priced_key, streams_at_once

LONG = " ".join(["word"] * 2000)  # 2,000 tokens whatever max_tokens says


@pytest.fixture
def settings(settings):
    return {**settings, **PATIENT}


@pytest.fixture
def long_answers(admin, fake):
    priced_key(admin, fake, SECRET)
    fake.set_behaviour(SECRET, Behaviour.ok(content=LONG))


def test_fifty_parallel_streams_spend_the_budget_and_one_reservation_at_most(
    admin, server, fake, long_answers
):
    created = budget_key(admin, max_budget="0.01")
    client = sdk(server, created["key"])
    finishes, refusals = streams_at_once(client, 50)
    spent = spend(admin, created["id"])
    print(f"spent {spent / 100:.1f} % of the budget")  # noqa: T201 - the figure
    assert len(finishes) + len(refusals) == 50
    assert finishes and all(reasons == ["length"] for reasons in finishes)
    assert set(refusals) <= {"budget_exceeded"}
    asked = [r.body.get("max_completion_tokens") for r in fake.requests_for(SECRET)]
    assert asked and all(0 < n <= 256 for n in asked)  # set, as the client gave none
    assert spent <= 10_000 + RESERVATION


def test_a_short_budget_cuts_the_stream_at_what_it_can_pay(admin, server, fake, long_answers):
    """$0.000100 pays the 8 prompt tokens and 92 answer tokens: the stream stops there."""
    created = budget_key(admin, max_budget="0.000100")
    client = sdk(server, created["key"])
    stream = client.chat.completions.create(
        **chat(), stream=True, max_tokens=1000, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 92 == len(text.split())
    assert fake.requests[-1].body["max_tokens"] == 92
    assert spend(admin, created["id"]) == 100


def test_an_anthropic_stream_ends_with_max_tokens(admin, server, fake, long_answers):
    created = budget_key(admin, max_budget="0.000100")
    client = native(server, created["key"])
    with client.messages.stream(
        model="gpt-4o-mini", max_tokens=1000, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "max_tokens"
    assert len(message.content[0].text.split()) == 92
    assert spend(admin, created["id"]) <= 100


def test_a_responses_stream_ends_incomplete(admin, server, fake, long_answers):
    created = budget_key(admin, max_budget="0.000100")
    client = sdk(server, created["key"])
    events = list(client.responses.create(model="gpt-4o-mini", input="Say hello", stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert spend(admin, created["id"]) <= 100


def test_an_anthropic_upstream_stream_is_cut_in_either_dialect(admin, server):
    """A native Anthropic upstream that writes past max_tokens: relayed as it is to an
    Anthropic client, translated to an OpenAI one; both end at the reservation."""
    from tests.fake_anthropic import Reply

    secret = "sk-ant-api03-cccccccccccccccccccccccc"
    with priced_claude(admin, secret) as claude:
        claude.script(secret, [Reply.ok(text=LONG)] * 2)
        created = budget_key(admin, max_budget="0.000100")
        with native(server, created["key"]).messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=1000,
            messages=[{"role": "user", "content": "Say hello"}],
        ) as stream:
            message = stream.get_final_message()
        assert message.stop_reason == "max_tokens"
        assert len(message.content[0].text.split()) <= 92
        assert claude.messages_requests[-1].body["max_tokens"] <= 92
        created = budget_key(admin, max_budget="0.000100")
        chunks = list(
            sdk(server, created["key"]).chat.completions.create(
                model="claude-sonnet-4-5", messages=[{"role": "user", "content": "Say hello"}],
                stream=True,
            )
        )  # fmt: skip
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(text.split()) <= 92


def test_a_responses_upstream_stream_is_cut_incomplete(admin, server, fake):
    """A key with the Responses API relays the upstream's events as they are: the cut is a
    `response.incomplete` of the upstream's response, and the upstream was asked for no
    more than the reservation (`max_output_tokens`)."""
    priced_key(admin, fake, SECRET, responses_api=True)
    # (The test's upstream numbers at most 1,000 Responses events.)
    fake.set_behaviour(SECRET, Behaviour.ok(content=" ".join(["word"] * 500)))
    created = budget_key(admin, max_budget="0.000100")
    client = sdk(server, created["key"])
    events = list(client.responses.create(model="gpt-4o-mini", input="Say hello", stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.id == events[0].response.id  # the upstream's own response
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert 0 < len(text.split()) <= 100
    assert 0 < fake.requests[-1].body["max_output_tokens"] <= 100
    assert spend(admin, created["id"]) <= 100

"""Budgets hold against output that is not the answer's text: an upstream that ignores
`max_tokens` and streams an endless tool call or endless reasoning is cut at the
reservation too (every output token it bills counts), in each upstream format, and the
client's SDK reads the cut stream; extended thinking is fitted under the reservation."""

from __future__ import annotations

import pytest

from tests.conftest import chat
from tests.fake_upstream import Behaviour
from tests.limits.test_budgets import SECRET, budget_key, sdk, spend
from tests.overspend import PATIENT, RESERVATION, native, priced_claude, priced_key, streams_at_once

WORDS = " ".join(["word"] * 2000)  # 2,000 tokens whatever max_tokens says
CLAUDE = "sk-ant-api03-dddddddddddddddddddddddd"
PROMPT = [{"role": "user", "content": "Say hello"}]
# The event that passes the cap goes out whole, and is booked: a few tokens past it.
PAST = 5
ENDLESS = {
    "tool call": Behaviour.tool_call("write", {"text": WORDS}),
    "reasoning": Behaviour.ok(content="Done.", reasoning=WORDS),
}


@pytest.fixture
def settings(settings):
    return {**settings, **PATIENT}


@pytest.fixture
def priced(admin, fake):
    priced_key(admin, fake, SECRET)


@pytest.fixture
def claude(admin):
    with priced_claude(admin, CLAUDE) as upstream:
        yield upstream


@pytest.mark.parametrize("kind", list(ENDLESS))
def test_parallel_endless_tool_calls_and_reasoning_spend_the_budget_at_most(
    admin, server, fake, priced, kind
):
    fake.set_behaviour(SECRET, ENDLESS[kind])
    created = budget_key(admin, max_budget="0.01")
    client = sdk(server, created["key"])
    finishes, refusals = streams_at_once(client, 50)
    spent = spend(admin, created["id"])
    print(f"{kind}: spent {spent / 100:.1f} % of the budget")  # noqa: T201 - the figure
    assert len(finishes) + len(refusals) == 50
    assert finishes and all(reasons == ["length"] for reasons in finishes)
    assert set(refusals) <= {"budget_exceeded"}
    assert spent <= 10_000 + RESERVATION


def test_a_cut_tool_call_is_booked_and_parsed_by_the_sdk(admin, server, fake, priced):
    """$0.000100 pays 8 prompt tokens and 92 of output: the call's arguments stop there,
    booked at what was sent (the name and arguments counted), the SDK reads the rest."""
    fake.set_behaviour(SECRET, ENDLESS["tool call"])
    created = budget_key(admin, max_budget="0.000100")
    stream = sdk(server, created["key"]).chat.completions.create(
        **chat(), stream=True, max_tokens=1000, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices]
    arguments = "".join(call[0].function.arguments or "" for call in calls if call)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert 50 < len(arguments.split()) <= 92
    assert 80 <= chunks[-1].usage.completion_tokens <= 92
    assert spend(admin, created["id"]) <= 100 + PAST


def test_anthropic_thinking_and_tool_use_are_cut_with_their_block_closed(admin, server, claude):
    """Endless thinking, then an endless tool input: an Anthropic client's SDK gets the
    open block closed and `max_tokens`, the upstream was asked for no more."""
    from tests.fake_anthropic import Reply

    claude.script(
        CLAUDE, [Reply.ok(text="", thinking=WORDS), Reply.tool_use("write", {"t": WORDS})]
    )
    client = native(server, "")
    for block in ("thinking", "tool_use"):
        created = budget_key(admin, max_budget="0.000100")
        client.api_key = created["key"]
        with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=1000, messages=PROMPT
        ) as stream:
            message = stream.get_final_message()
        assert message.stop_reason == "max_tokens"
        assert [b.type for b in message.content] == [block]
        assert claude.messages_requests[-1].body["max_tokens"] <= 92
        assert spend(admin, created["id"]) <= 100 + PAST


def test_anthropic_tool_use_is_cut_for_an_openai_client(admin, server, claude):
    from tests.fake_anthropic import Reply

    claude.script(CLAUDE, [Reply.tool_use("write", {"t": WORDS})])
    created = budget_key(admin, max_budget="0.000100")
    chunks = list(
        sdk(server, created["key"]).chat.completions.create(
            model="claude-sonnet-4-5", messages=PROMPT, stream=True
        )
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices]
    assert 0 < len("".join(c[0].function.arguments or "" for c in calls if c).split()) <= 92
    assert 80 <= spend(admin, created["id"]) <= 100 + PAST  # the input counted


def test_a_responses_function_call_is_cut_incomplete(admin, server, fake):
    priced_key(admin, fake, SECRET, responses_api=True)
    fake.set_behaviour(SECRET, Behaviour.tool_call("write", {"text": WORDS}))
    created = budget_key(admin, max_budget="0.000100")
    client = sdk(server, created["key"])
    events = list(client.responses.create(model="gpt-4o-mini", input="Say hello", stream=True))
    assert events[-1].type == "response.incomplete"
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert 0 < len("".join(deltas).split()) <= 100
    assert spend(admin, created["id"]) <= 100 + PAST


def test_gemini_thoughts_are_cut(admin, server):
    from tests.fake_gemini import FakeGemini, Reply

    key = "AIzaSy-budget-gemini-aaaaaaaaaaaaaaaaaa"
    with FakeGemini([key]) as gemini:
        priced_key(admin, gemini, key, "gemini-2.5-flash", provider="gemini", name="gemini")
        gemini.script(key, [Reply.ok(text="Done.", thoughts=WORDS)])
        created = budget_key(admin, max_budget="0.000100")
        chunks = list(
            sdk(server, created["key"]).chat.completions.create(
                model="gemini-2.5-flash", messages=PROMPT, stream=True
            )
        )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert spend(admin, created["id"]) <= 100 + PAST


def thinking_request(client, budget_tokens: int = 10_000):
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=16_000,
        thinking={"type": "enabled", "budget_tokens": budget_tokens},
        messages=PROMPT,
    ) as stream:
        return stream.get_final_message()


def test_extended_thinking_is_fitted_under_the_reservation(admin, server, claude):
    """A budget that pays ~3,000 answer tokens: max_tokens and the thinking budget asked
    upstream fit it (Anthropic wants 1,024 <= budget_tokens < max_tokens)."""
    from tests.fake_anthropic import Reply

    claude.script(CLAUDE, [Reply.ok(text="Hi", thinking="Pondering")])
    created = budget_key(admin, max_budget="0.003000")
    message = thinking_request(native(server, created["key"]))
    assert [b.type for b in message.content] == ["thinking", "text"]
    asked = claude.messages_requests[-1].body
    assert asked["max_tokens"] <= 3000 - 8
    assert 1024 <= asked["thinking"]["budget_tokens"] < asked["max_tokens"]


def test_thinking_is_dropped_when_the_reservation_cannot_hold_its_least_budget(
    admin, server, claude
):
    from tests.fake_anthropic import Reply

    claude.script(CLAUDE, [Reply.ok(text="Hi")])
    created = budget_key(admin, max_budget="0.000500")
    assert thinking_request(native(server, created["key"])).content[0].text == "Hi"
    asked = claude.messages_requests[-1].body
    assert asked["max_tokens"] <= 500 and "thinking" not in asked


def test_a_reasoning_effort_sent_to_anthropic_stays_under_the_reservation(admin, server, claude):
    from tests.fake_anthropic import Reply

    claude.script(CLAUDE, [Reply.ok(text="Hi", thinking="Pondering")])
    created = budget_key(admin, max_budget="0.003000")
    answer = sdk(server, created["key"]).chat.completions.create(
        model="claude-sonnet-4-5",
        messages=PROMPT,
        reasoning_effort="high",
        max_completion_tokens=16_000,
    )
    assert answer.choices[0].message.content == "Hi"
    asked = claude.messages_requests[-1].body
    assert asked["max_tokens"] <= 3000 - 8
    assert 1024 <= asked["thinking"]["budget_tokens"] < asked["max_tokens"]

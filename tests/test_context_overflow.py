"""Context overflow per route (issue 12, seed 001 "context pruning on 413"): an upstream's
`context_length_exceeded`, 413 or Anthropic's "prompt is too long" goes back to the
client (`error`), moves on to a larger model of the chain (`fallback`), or has the oldest
turns pruned and the same model asked again (`prune`, with `x-keyrelay-context-pruned`)."""

from __future__ import annotations

import anthropic
import openai
import pytest

from gateway import pruning
from gateway.providers.base import ContextOverflow, context_overflow
from tests.conftest import MASTER_KEY
from tests.fake_anthropic import FakeAnthropic
from tests.fake_upstream import Behaviour, count_prompt_tokens

SMALL = "sk-ctx-small-aaaaaaaaaaaa1111"
LARGE = "sk-ctx-large-bbbbbbbbbbbb2222"
CLAUDE = "sk-ant-api03-ctxctxctxctxctxctxctx"
WINDOW = 200  # the small model's context, in the fake's tokens
HEADER = "x-keyrelay-context-pruned"


def conversation(turns: int = 8) -> list[dict]:
    """A system turn, `turns` question/answer pairs of ~60 fake tokens each, a last question."""
    messages = [{"role": "system", "content": "You are terse."}]
    for number in range(turns):
        messages.append({"role": "user", "content": f"question {number}: " + "lorem " * 20})
        messages.append({"role": "assistant", "content": f"answer {number}: " + "ipsum " * 20})
    messages.append({"role": "user", "content": "And the last question?"})
    return messages


@pytest.fixture
def models(admin, fake):
    """`small-ctx` (a window of WINDOW tokens) and `big-ctx` (room for anything)."""
    admin.add_key(SMALL, fake.base_url, models=["small-ctx"], name="small")
    admin.add_key(LARGE, fake.base_url, models=["big-ctx"], name="large")
    fake.set_behaviour(SMALL, Behaviour.context_window(WINDOW))
    fake.set_behaviour(LARGE, Behaviour.context_window(100_000))


def route(admin, **fields) -> dict:
    body = {"name": "chat", "target": "small-ctx", "fallbacks": ["big-ctx"], **fields}
    made = admin.call("POST", "/routes", body)
    assert made.status == 201, made.data
    return made.json()


def logged(server, admin) -> dict:
    server.app.extensions["keyrelay"].books.flush()
    return admin.logs()[0]


def chat_requests(fake, secret: str) -> list[dict]:
    return [r.body for r in fake.requests_for(secret) if r.path.endswith("/chat/completions")]


# -- recognising an overflow --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (
            400,
            "context_length_exceeded",
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9000 tokens. Please reduce the length of the messages.",
            ContextOverflow(8192, 9000, None),
        ),
        (
            400,
            "context_length_exceeded",
            "This model's maximum context length is 128000 tokens. However, you requested "
            "130000 tokens (129000 in the messages, 1000 in the completion).",
            ContextOverflow(128000, 129000, 1000),
        ),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 208310 tokens > 200000 maximum",
            ContextOverflow(200000, 208310, None),
        ),
        (
            400,
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000, "
            "decrease input length or `max_tokens` and try again",
            ContextOverflow(200000, 188240, 21333),
        ),
        (
            400,
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT: The input token count (1048577) exceeds the maximum number of "
            "tokens allowed (1048576).",
            ContextOverflow(1048576, 1048577, None),
        ),
        (413, None, "<html>413 Request Entity Too Large</html>", ContextOverflow()),
        (413, "request_too_large", "Request exceeds the maximum allowed size", ContextOverflow()),
        (413, "rate_limit_exceeded", "Request too large: tokens per minute", None),  # Groq's TPM
        (400, "invalid_value", "temperature must be at most 2", None),
        (429, "context_length_exceeded", "maximum context length is 10 tokens", None),
        (500, None, "maximum context length", None),
    ],
)
def test_an_overflow_is_recognised_with_its_sizes(status, code, message, expected):
    assert context_overflow(status, code, message) == expected


def test_pruning_keeps_system_the_last_user_turn_and_tool_pairs():
    messages = [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "first " * 50},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "result " * 50},
        {"role": "assistant", "content": "old answer " * 30},
        {"role": "user", "content": "now this"},
    ]
    total = pruning.prompt_tokens(messages)
    first_turn = pruning.message_tokens(messages[1])
    pruned = pruning.prune_chat(messages, total - first_turn)
    # The first turn is enough; the tool call would then lead the conversation (no user
    # turn first): it goes too, with its result, and so does the answer after it. The
    # system turn and the last user turn stay.
    assert pruned.messages == [messages[0], messages[-1]] and pruned.dropped == 4
    # Room for all but the first turn and the old answer: the tool call and its result
    # stay together.
    tail = [messages[0], *messages[2:]]
    kept = pruning.prune_chat(tail, pruning.prompt_tokens(tail) - 1).messages
    assert [m["role"] for m in kept] == ["system", "user"]  # not the call without its result
    # Even the turns that must stay do not fit: nothing to do.
    assert pruning.prune_chat(messages, 5) is None


# -- error: as today ------------------------------------------------------------------------


@pytest.mark.both_databases
def test_error_mode_returns_the_upstreams_400(admin, fake, models, client, server):
    route(admin)  # on_context_overflow defaults to error
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="chat", messages=conversation())
    assert err.value.code == "context_length_exceeded"
    assert "maximum context length is 200 tokens" in err.value.message
    assert HEADER not in err.value.response.headers
    assert len(chat_requests(fake, SMALL)) == 1 and chat_requests(fake, LARGE) == []
    row = logged(server, admin)
    assert (row["status_code"], row["model"], row["context_pruned"]) == (400, "small-ctx", None)
    assert [a["outcome"] for a in row["attempts"]] == ["context_overflow"]


# -- fallback: the next model of the chain --------------------------------------------------


@pytest.mark.both_databases
def test_fallback_mode_moves_on_to_the_larger_model(admin, fake, models, client, server):
    route(admin, on_context_overflow="fallback")
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=conversation())
    assert raw.parse().choices[0].message.content
    assert len(chat_requests(fake, SMALL)) == 1
    assert chat_requests(fake, LARGE)[0]["messages"] == conversation()  # whole, as sent
    row = logged(server, admin)
    assert (row["model"], row["requested_model"], row["status_code"]) == ("big-ctx", "chat", 200)
    assert [a["outcome"] for a in row["attempts"]] == ["context_overflow", "ok"]
    assert HEADER not in raw.headers
    # A short prompt stays on the small model.
    client.chat.completions.create(model="chat", messages=conversation(1))
    assert len(chat_requests(fake, SMALL)) == 2 and len(chat_requests(fake, LARGE)) == 1


def test_fallback_mode_with_no_larger_model_left_gives_the_overflow(
    admin, fake, models, client, server
):
    route(admin, on_context_overflow="fallback")
    fake.set_behaviour(LARGE, Behaviour.context_window(WINDOW, status=413))
    with pytest.raises(openai.BadRequestError) as err:  # the first model's own 400
        client.chat.completions.create(model="chat", messages=conversation())
    assert err.value.code == "context_length_exceeded"
    assert len(chat_requests(fake, LARGE)) == 1
    assert logged(server, admin)["model"] == "small-ctx"


# -- prune: the oldest turns go ----------------------------------------------------------------


def assert_pruned(sent: list[dict], original: list[dict]) -> None:
    """System and last user turn kept, the rest a tail of the original, within the window."""
    assert sent[0] == original[0] and sent[-1] == original[-1]
    assert len(sent) < len(original)
    assert sent[1:] == original[len(original) - len(sent) + 1 :]  # the oldest went
    assert sent[1]["role"] == "user"
    assert count_prompt_tokens(sent) <= WINDOW


@pytest.mark.both_databases
def test_prune_mode_drops_the_oldest_turns(admin, fake, models, client, server):
    route(admin, on_context_overflow="prune", fallbacks=[])
    original = conversation()
    assert count_prompt_tokens(original) > 2 * WINDOW
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=original)
    assert raw.parse().choices[0].message.content
    sent = chat_requests(fake, SMALL)
    assert sent[0]["messages"] == original
    assert_pruned(sent[-1]["messages"], original)
    dropped = len(original) - len(sent[-1]["messages"])
    assert raw.headers[HEADER] == str(dropped)
    row = logged(server, admin)
    assert (row["status_code"], row["model"], row["context_pruned"]) == (200, "small-ctx", dropped)
    assert row["attempts"][-1]["outcome"] == "ok"
    assert {a["outcome"] for a in row["attempts"][:-1]} == {"context_overflow"}


def test_prune_mode_streams_too(admin, fake, models, client, server):
    route(admin, on_context_overflow="prune", fallbacks=[])
    original = conversation()
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=original, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text
    sent = chat_requests(fake, SMALL)[-1]["messages"]
    assert_pruned(sent, original)
    assert raw.headers[HEADER] == str(len(original) - len(sent))
    assert logged(server, admin)["context_pruned"] == len(original) - len(sent)


def test_prune_after_a_413_without_sizes_halves_until_it_fits(admin, fake, models, client):
    route(admin, on_context_overflow="prune", fallbacks=[])
    fake.set_behaviour(SMALL, Behaviour.context_window(WINDOW, status=413))
    original = conversation()
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=original)
    assert raw.parse().choices[0].message.content
    assert_pruned(chat_requests(fake, SMALL)[-1]["messages"], original)
    assert int(raw.headers[HEADER]) > 0


def test_prune_to_the_routes_context_window_in_one_round(admin, fake, models, client):
    max_tokens = 20
    original = conversation()
    window = pruning.prompt_tokens(original) // 2
    route(admin, on_context_overflow="prune", fallbacks=[], context_window=window)
    fake.set_behaviour(SMALL, Behaviour.context_window(count_prompt_tokens(original) - 1, 413))
    client.chat.completions.create(model="chat", messages=original, max_tokens=max_tokens)
    sent = chat_requests(fake, SMALL)
    assert len(sent) == 2  # the 413, then one pruned request
    assert pruning.prompt_tokens(sent[1]["messages"]) <= window - max_tokens
    assert sent[1]["messages"][0] == original[0] and sent[1]["messages"][-1] == original[-1]


def test_prune_gives_the_original_error_when_the_last_turn_alone_is_too_long(
    admin, fake, models, client, server
):
    route(admin, on_context_overflow="prune", fallbacks=[])
    huge = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x " * 900}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="chat", messages=huge)
    assert err.value.code == "context_length_exceeded"
    assert HEADER not in err.value.response.headers
    assert len(chat_requests(fake, SMALL)) == 1  # nothing could go: not sent again
    row = logged(server, admin)
    assert (row["status_code"], row["context_pruned"]) == (400, None)


# -- an Anthropic client, passed through to an Anthropic upstream ----------------------------


@pytest.mark.both_databases
def test_anthropic_client_passthrough_prunes_its_own_body(admin, server):
    with FakeAnthropic([CLAUDE]) as claude:
        claude.context_window = 150  # the fake's words
        admin.add_key(CLAUDE, claude.base_url, provider="anthropic", name="claude")
        body = {"name": "claude-sonnet-4-5", "on_context_overflow": "prune"}
        assert admin.call("POST", "/routes", body).status == 201
        messages = []
        for number in range(6):
            messages.append({"role": "user", "content": f"step {number} " + "alpha " * 15})
            messages.append(
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "checking " * 5},
                        {
                            "type": "tool_use",
                            "id": f"toolu_{number}",
                            "name": "look",
                            "input": {"q": "beta " * 5},
                        },
                    ],
                }  # fmt: skip
            )
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": f"toolu_{number}",
                            "content": "gamma " * 10,
                        },
                    ],
                }  # fmt: skip
            )
        messages.append({"role": "user", "content": "So what now?"})
        sdk = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
        raw = sdk.messages.with_raw_response.create(
            model="claude-sonnet-4-5", max_tokens=100, system="Be kind.", messages=messages
        )
        sdk.close()
        assert raw.parse().content[0].text
        sent = claude.messages_requests
        assert sent[0].body["messages"] == messages  # first as the client sent it
        last = sent[-1].body
        # The fake refuses a tool_result without its tool_use: pairs went together.
        assert last["system"] == "Be kind." and last["messages"][-1] == messages[-1]
        assert last["messages"] == messages[len(messages) - len(last["messages"]) :]
        assert last["messages"][0]["role"] == "user"
        assert isinstance(last["messages"][0]["content"], str)  # a real user turn leads
        assert raw.headers[HEADER] == str(len(messages) - len(last["messages"]))

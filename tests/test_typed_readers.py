"""The readers of the internal request: local token counts, a CLI's prompt, pruning and
the answer cap read the typed request; an Anthropic or Responses request has no chat body.

The expected chat messages below are what the Anthropic and Responses dialects made of
these bodies when they translated them to OpenAI chat: counts and prompts read from the
internal request must not change."""

from __future__ import annotations

import orjson
import pytest

from gateway import pruning, tokens
from gateway.codecs.anthropic.request import decode as anthropic_decode
from gateway.codecs.openai_chat.request import decode as chat_decode
from gateway.codecs.openai_responses.request import decode as responses_decode
from gateway.codecs.request import Text, ToolCall, ToolResult, Turn
from gateway.dialects.anthropic_messages import AnthropicMessages
from gateway.dialects.openai_responses import OpenAIResponses
from gateway.providers.base import ContextOverflow
from gateway.providers.cli import ClaudeCodeAdapter, CodexCliAdapter
from gateway.proxy.chain import prune_request
from tests.fake_anthropic import FakeAnthropic

IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}}  # fmt: skip
AGENT = {
    "model": "m",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "You are terse."},
               {"type": "text", "text": "Answer in French."}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "<reminder>be kind</reminder>"},
            {"type": "text", "text": "What is in the picture?"}, IMAGE]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Let me look", "signature": "sig"},
            {"type": "text", "text": "I will check."},
            {"type": "tool_use", "id": "toolu_1", "name": "describe",
             "input": {"detail": "high", "n": 2}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "a cat"}, {"type": "text", "text": "on a mat"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "timeout",
             "is_error": True},
            {"type": "text", "text": "So?"}]},
        {"role": "assistant", "content": "A cat on a mat."},
        {"role": "system", "content": "Environment: linux"},
        {"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                            "data": "The report says 42."}},
            {"type": "text", "text": "Summarize."}]},
    ],
    "tools": [
        {"name": "describe", "description": "Describe an image",
         "input_schema": {"type": "object", "properties": {"detail": {"type": "string"}}}},
        {"name": "bare"},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
    ],
}  # fmt: skip
AGENT_AS_CHAT = [
    {"role": "system", "content": "You are terse.\nAnswer in French."},
    {"role": "user", "content": [
        {"type": "text", "text": "<reminder>be kind</reminder>"},
        {"type": "text", "text": "What is in the picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
    {"role": "assistant", "content": "I will check.", "tool_calls": [
        {"id": "toolu_1", "type": "function",
         "function": {"name": "describe", "arguments": '{"detail":"high","n":2}'}}]},
    {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat\non a mat"},
    {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout"},
    {"role": "user", "content": "So?"},
    {"role": "assistant", "content": "A cat on a mat."},
    {"role": "system", "content": "Environment: linux"},
    {"role": "user", "content": "The report says 42.\nSummarize."},
]  # fmt: skip
AGENT_TOOLS_AS_CHAT = [
    {"type": "function", "function": {
        "name": "describe",
        "parameters": {"type": "object", "properties": {"detail": {"type": "string"}}},
        "description": "Describe an image"}},
    {"type": "function", "function": {
        "name": "bare", "parameters": {"type": "object", "properties": {}}}},
]  # fmt: skip
EMPTY_TURNS = {
    "model": "m",
    "max_tokens": 100,
    "system": "",
    "messages": [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
    ],
}  # fmt: skip
EMPTY_TURNS_AS_CHAT = [
    {"role": "user", "content": ""},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "t", "content": ""},
]  # fmt: skip
CODEX = {
    "model": "m",
    "instructions": "Be brief.",
    "input": [
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": [
            {"type": "input_text", "text": "Look:"},
            {"type": "input_image", "image_url": "https://example.com/a.png"}]},
        {"type": "reasoning", "id": "rs_1", "encrypted_content": "opaque", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "time", "arguments": "{}"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Checking both."}]},
        {"type": "function_call_output", "call_id": "c1", "output": "12 C"},
        {"type": "function_call_output", "call_id": "c2", "output": {"hour": 9}},
        {"role": "user", "content": [{"type": "input_text", "text": "And"},
                                     {"type": "input_text", "text": "tomorrow?"}]},
    ],
    "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
}  # fmt: skip
CODEX_AS_CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "system", "content": "Use metric units."},
    {"role": "user", "content": [
        {"type": "text", "text": "Look:"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
    {"role": "assistant", "content": "Checking both.", "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"id": "c2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "12 C"},
    {"role": "tool", "tool_call_id": "c2", "content": '{"hour":9}'},
    {"role": "user", "content": "And\ntomorrow?"},
]  # fmt: skip
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.mark.parametrize(
    ("decode", "body", "as_chat"),
    [
        (anthropic_decode, {"model": "m", "max_tokens": 9, "messages": HELLO}, HELLO),
        (anthropic_decode, AGENT, AGENT_AS_CHAT),
        (anthropic_decode, EMPTY_TURNS, EMPTY_TURNS_AS_CHAT),
        (responses_decode, {"model": "m", "input": "Hello there"}, HELLO),
        (responses_decode, CODEX, CODEX_AS_CHAT),
    ],
)
def test_a_typed_request_counts_as_its_chat_messages_did(decode, body, as_chat):
    typed = decode(body)
    assert tokens.count_request(typed) == tokens.count_prompt(as_chat)
    assert tokens.quick_request_estimate(typed) == tokens.quick_prompt_estimate(as_chat)


@pytest.mark.parametrize(
    ("body", "as_chat", "tools", "expected"),
    [
        (AGENT, AGENT_AS_CHAT, AGENT_TOOLS_AS_CHAT, 154),
        (EMPTY_TURNS, EMPTY_TURNS_AS_CHAT, [], 14),
    ],
)
def test_count_tokens_counts_what_it_counted_from_chat_messages(body, as_chat, tools, expected):
    calls = [c["function"] for m in as_chat for c in m.get("tool_calls") or ()]
    before = tokens.count_prompt(as_chat) + sum(
        tokens.count_text(c["name"]) + tokens.count_text(c["arguments"]) for c in calls
    )
    before += tokens.count_text(orjson.dumps(tools).decode()) if tools else 0
    counted = AnthropicMessages().count_tokens({k: v for k, v in body.items() if k != "max_tokens"})
    assert counted == before == expected


def test_a_cli_prompt_from_the_typed_request_is_what_it_was():
    claude, codex = ClaudeCodeAdapter(None), CodexCliAdapter(None)
    assert claude.stdin(anthropic_decode(AGENT)) == (
        "You are terse.\nAnswer in French.\n\nEnvironment: linux",
        "User: <reminder>be kind</reminder>What is in the picture?\n\nAssistant: I will check."
        "\n\nUser: a cat\non a mat\n\nUser: Error: timeout\n\nUser: So?\n\nAssistant: A cat on"
        " a mat.\n\nUser: The report says 42.\nSummarize.",
    )
    assert codex.stdin(responses_decode(CODEX)) == (
        "",
        "System: Be brief.\n\nSystem: Use metric units.\n\nUser: Look:\n\nAssistant: Checking"
        ' both.\n\nUser: 12 C\n\nUser: {"hour":9}\n\nUser: And\ntomorrow?',
    )
    chat = {"model": "m", "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Look"},
            {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
            {"type": "text", "text": "here"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "user", "content": "Thanks"},
    ]}  # fmt: skip
    said = "User: Lookhere\n\nAssistant: \n\nUser: done\n\nUser: Thanks"
    assert claude.stdin(chat_decode(chat)) == ("Be brief.", said)
    assert codex.stdin(chat_decode(chat)) == ("", "System: Be brief.\n\n" + said)
    assert codex.stdin(anthropic_decode({"model": "m", "max_tokens": 9, "messages": HELLO})) == (
        "",
        "Hello there",
    )


def test_the_anthropic_dialect_builds_no_chat_body():
    request = AnthropicMessages().parse(AGENT)
    assert request.body == {"model": "m"} and request.messages == []
    assert request.typed.turns[0] == Turn("system", [Text("You are terse."),
                                                     Text("Answer in French.")])  # fmt: skip
    assert request.count_prompt() == tokens.count_prompt(AGENT_AS_CHAT)


def test_the_responses_dialect_builds_no_chat_body(tmp_path):
    request = OpenAIResponses(None, None).parse(CODEX)
    assert request.body == {"model": "m"} and request.messages == []
    assert request.count_prompt() == tokens.count_prompt(CODEX_AS_CHAT)


def test_the_answer_cap_reaches_the_typed_request_and_the_clients_body():
    body = {**AGENT, "thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 4000}
    request = AnthropicMessages().parse(body)
    request.limit_answer(1500)
    hop = request.typed_for(request.for_model("other-model"))
    assert (hop.model, hop.max_tokens, request.typed.max_tokens) == ("other-model", 1500, 1500)
    assert request.native[1]["max_tokens"] == 1500
    assert request.native[1]["thinking"]["budget_tokens"] < 1500  # fitted below the cap
    assert request.for_model("other-model") == {"model": "other-model"}  # no chat fields
    request.limit_answer(3000)  # never raised again
    assert request.typed.max_tokens == 1500


def test_pruning_drops_the_oldest_typed_turns_with_their_tool_results():
    said = "word " * 200
    typed = anthropic_decode({
        "model": "m", "max_tokens": 9, "system": "Rules.",
        "messages": [
            {"role": "user", "content": said},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": said}]},
            {"role": "assistant", "content": said},
            {"role": "user", "content": "and now?"},
        ],
    })  # fmt: skip
    counted = pruning.typed_tokens(typed)
    pruned, dropped = pruning.prune_typed(typed, counted - 1)
    # The first user turn goes, and with it the call and its result (a front that is not
    # a user's goes too); the system prompt and the last user turn stay.
    assert [t.role for t in pruned.turns] == ["system", "user"]
    assert dropped == 4 and pruned.turns[-1].content == [Text("and now?")]
    assert pruned.name_of("messages[1]") == "messages[4]"  # still the client's own item
    assert pruning.prune_typed(pruned, 1) is None  # what must stay does not fit


def test_a_tool_result_stays_with_its_call_when_pruning_typed_turns():
    turns = [
        Turn("user", [Text("a " * 300)]),
        Turn("assistant", [ToolCall("c", "f", "{}")]),
        Turn("tool", [ToolResult("c", [Text("b " * 300)])]),
        Turn("user", [Text("next")]),
        Turn("assistant", [Text("ok")]),
        Turn("user", [Text("last")]),
    ]
    typed = chat_decode({"model": "m", "messages": []})
    typed.turns = turns
    pruned, dropped = pruning.prune_typed(typed, pruning.typed_tokens(typed) - 10)
    kept = pruned.turns
    assert ToolCall("c", "f", "{}") not in [p for t in kept for p in t.content]
    assert all(t.role != "tool" for t in kept) and kept[0].role == "user"
    assert dropped == 3


def test_prune_request_prunes_the_typed_turns_and_the_anthropic_body_alike():
    said = "word " * 400
    body = {"model": "m", "max_tokens": 50, "messages": [
        {"role": "user", "content": said},
        {"role": "assistant", "content": said},
        {"role": "user", "content": "short"},
    ]}  # fmt: skip
    request = AnthropicMessages().parse(body)
    overflow = ContextOverflow(limit=300, used=None, answer=None)
    dropped = prune_request(request, overflow, None)
    assert dropped == 2
    assert [t.content for t in request.typed.turns] == [[Text("short")]]
    assert request.native[1]["messages"] == [{"role": "user", "content": "short"}]
    assert request.body == {"model": "m"}
    responses = OpenAIResponses(None, None).parse(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": said},
                {"role": "assistant", "content": said},
                {"role": "user", "content": "short"},
            ],
        }  # fmt: skip
    )
    assert prune_request(responses, overflow, None) == 2
    assert responses.native is None  # the pruned typed request is what goes up
    assert [t.content for t in responses.typed.turns] == [[Text("short")]]


CLAUDE = "sk-ant-api03-typed-readers-aaaaaaa"


@pytest.fixture
def claude():
    with FakeAnthropic([CLAUDE]) as fake:
        yield fake


def test_a_stored_conversation_reaches_an_anthropic_key_after_the_instructions(
    client, admin, claude
):
    admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
    first = client.responses.create(model="claude-sonnet-4-5", input="My name is Ada.")
    client.responses.create(
        model="claude-sonnet-4-5",
        instructions="Be brief.",
        input="What is my name?",
        previous_response_id=first.id,
    )
    sent = claude.messages_requests[-1].body
    assert sent["system"] == "Be brief."
    assert [(m["role"], m["content"][0]["text"]) for m in sent["messages"]] == [
        ("user", "My name is Ada."),
        ("assistant", first.output_text),
        ("user", "What is my name?"),
    ]

"""What a translated answer shows its client of the provider's usage and reasoning,
through the official SDKs: cached prompt tokens reported by an OpenAI-format, Anthropic or
Gemini upstream appear in the Anthropic client's `cache_read_input_tokens` and the
Responses client's `input_tokens_details.cached_tokens`, whole or streamed; Anthropic
thinking reaches a Responses client as a reasoning item and a chat client as
`reasoning_content`."""

from __future__ import annotations

import pytest

from tests.fake_anthropic import Reply as ClaudeReply
from tests.fake_fixtures import anthropic_fake, gemini_fake
from tests.fake_gemini import Reply as GeminiReply
from tests.fake_upstream import Behaviour

OPENAI = "sk-translated-usage-aaaaaaaaaaaa"
CLAUDE = "sk-ant-api03-translated-usage-aaaa"
GEMINI = "AIzaSyFakeTranslated-aaaaaaaaaaaaaaaaaaaa"
PROMPT = "Use the cache, please"


claude = anthropic_fake(CLAUDE)
gemini = gemini_fake(GEMINI)


@pytest.fixture(params=["openai", "anthropic", "gemini"])
def upstream(request, admin, fake):
    """A key of each provider kind whose next answer reports cached prompt tokens:
    (model, cached tokens, cache writes)."""
    if request.param == "openai":
        admin.add_key(OPENAI, fake.base_url)
        fake.set_behaviour(OPENAI, Behaviour.cached(5000, 3968))
        return "gpt-4o-mini", 3968, 0
    if request.param == "anthropic":
        claude = request.getfixturevalue("claude")
        admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
        claude.script(CLAUDE, [ClaudeReply.ok(cache_creation=7, cache_read=2048)])
        return "claude-sonnet-4-5", 2048, 7
    gemini = request.getfixturevalue("gemini")
    admin.add_key(GEMINI, gemini.base_url, provider="gemini")
    gemini.script(GEMINI, [GeminiReply.ok(cached=3)])
    return "gemini-2.5-flash", 3, 0


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_client_sees_the_cached_tokens(messages_sdk, upstream, stream):
    model, cached, written = upstream
    asked = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        with messages_sdk.messages.stream(**asked) as events:
            message = events.get_final_message()
    else:
        message = messages_sdk.messages.create(**asked)
    assert message.content[0].text
    usage = message.usage
    assert usage.cache_read_input_tokens == cached
    assert usage.cache_creation_input_tokens == written
    # input_tokens are the uncached ones, as Anthropic counts them.
    assert usage.input_tokens >= 0 and usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_responses_client_sees_the_cached_tokens(client, upstream, stream):
    model, cached, written = upstream
    if stream:
        events = list(client.responses.create(model=model, input=PROMPT, stream=True))
        response = events[-1].response
    else:
        response = client.responses.create(model=model, input=PROMPT)
    assert response.output_text
    details = response.usage.input_tokens_details
    assert (details.cached_tokens, details.model_dump()["cache_write_tokens"]) == (cached, written)
    assert response.usage.input_tokens >= cached


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_thinking_is_a_reasoning_item(client, admin, claude, stream):
    admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
    claude.script(CLAUDE, [ClaudeReply.ok(thinking="First I weigh it")])
    asked = {"model": "claude-sonnet-4-5", "input": "Think first", "reasoning": {"effort": "low"}}
    if stream:
        events = list(client.responses.create(**asked, stream=True))
        deltas = [e.delta for e in events if e.type == "response.reasoning_text.delta"]
        assert "".join(deltas) == "First I weigh it"
        response = events[-1].response
    else:
        response = client.responses.create(**asked)
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and message.type == "message"
    assert reasoning.content[0].text == "First I weigh it"
    assert reasoning.encrypted_content == "sig"  # the thinking's signature, handed back later
    assert response.output_text


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_thinking_is_chat_reasoning_content(client, admin, claude, stream):
    admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
    claude.script(CLAUDE, [ClaudeReply.ok(thinking="First I weigh it")])
    asked = {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Think first"}],
        "reasoning_effort": "low",
    }
    if stream:
        chunks = list(client.chat.completions.create(**asked, stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        thought = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    else:
        message = client.chat.completions.create(**asked).choices[0].message
        thought = message.model_extra["reasoning_content"]
    assert thought == "First I weigh it"

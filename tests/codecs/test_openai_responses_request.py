"""The Responses request codec: a Responses body decoded into the internal request."""

from __future__ import annotations

import pytest

from gateway.codecs.anthropic.request import encode as anthropic_encode
from gateway.codecs.openai_responses.request import decode
from gateway.codecs.request import File, Image, Text, Thinking, ToolCall, ToolResult
from gateway.providers import ADAPTERS
from gateway.providers.carry import Unsupported, check_typed

SCHEMA = {"type": "object"}


def test_items_tools_and_settings_are_decoded():
    request = decode({
        "model": "gpt-5",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Rules."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Look"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBOR",
                 "detail": "high"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBER",
                 "filename": "r.pdf"},
                {"type": "input_file", "file_id": "file_1"},
            ]},
            {"type": "reasoning", "id": "rs_1", "encrypted_content": "opaque", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": ""},
            {"type": "function_call_output", "call_id": "call_1", "output": {"ok": True}},
            {"type": "item_reference", "id": "msg_0"},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": SCHEMA, "strict": True},
                  {"type": "web_search"}],
        "tool_choice": {"type": "allowed_tools", "mode": "required",
                        "tools": [{"type": "function", "name": "f"}]},
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "a", "schema": SCHEMA},
                 "verbosity": "low"},
        "reasoning": {"effort": "high", "summary": "auto"},
        "max_output_tokens": 50, "temperature": 0.1, "top_p": 0.5, "top_logprobs": 2,
        "user": "u", "prompt_cache_key": "k", "service_tier": "flex", "metadata": {"a": "b"},
        "stream": True,
    })  # fmt: skip
    system, developer, user, reasoning, call, result = request.turns
    assert system.content == [Text("Be brief.")] and developer.role == "developer"
    assert user.content == [
        Text("Look"),
        Image(data="iVBOR", media_type="image/png", detail="high"),
        File(data="JVBER", media_type="application/pdf", name="r.pdf"),
        File(file_id="file_1"),
    ]
    assert reasoning.content == [Thinking(redacted="opaque")]
    assert call.content == [ToolCall("call_1", "f", "{}")]
    assert result.content == [ToolResult("call_1", [Text('{"ok":true}')])]
    assert [tool.name for tool in request.tools] == ["f"]  # web search: Responses API only
    choice = request.tool_choice
    assert (choice.mode, choice.names, choice.required, choice.parallel) == (
        "allowed", ["f"], True, False)  # fmt: skip
    assert request.output.kind == "json_schema" and request.verbosity == "low"
    assert request.reasoning.effort == "high" and request.max_tokens == 50
    assert request.sampling.logprobs and request.sampling.top_logprobs == 2
    assert request.stream and request.prompt_cache_key == "k"
    assert request.name_of("messages[2].content[3]") == "input[1].content[3]"


def test_a_refusal_names_the_responses_field():
    gemini = ADAPTERS["gemini"]
    parts = [{"type": "input_text", "text": "x"}, {"type": "input_file", "file_id": "file_1"}]
    request = decode({"model": "m", "input": [{"role": "user", "content": parts}]})
    with pytest.raises(Unsupported) as refused:
        check_typed("gemini", gemini.carries, request, gemini.file_types)
    assert refused.value.param == "input[0].content[1]"
    cli = ADAPTERS["claude_code"]
    request = decode({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}})
    with pytest.raises(Unsupported) as refused:
        check_typed("claude_code", cli.carries, request, cli.file_types)
    assert refused.value.param == "text.format"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "input": 5},
        {"model": "m", "input": [None, 3, {"role": 7}, {"type": "function_call", "name": []}]},
        {"model": "m", "input": [{"role": "user", "content": [None, {"type": "input_image"}]}]},
        {"model": "m", "tools": "x", "tool_choice": {"type": "allowed_tools", "tools": 4},
         "text": {"format": 3}, "reasoning": {"effort": 1}},
    ],
)  # fmt: skip
def test_a_body_of_the_wrong_types_is_read_without_a_crash(body):
    """The dialect refuses such bodies first; the codec, as the second line, never raises."""
    decode(body)


def test_a_reasoning_item_with_text_hands_its_encrypted_content_back_as_the_signature():
    """What an Anthropic thinking block became (its signature as the encrypted content)
    goes back to an Anthropic upstream as that thinking block, signed."""
    signed = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "sig-1",
              "content": [{"type": "reasoning_text", "text": "Hmm."}]}  # fmt: skip
    request = decode({"model": "claude-sonnet-4-5", "input": [
        {"role": "user", "content": "Weather?"}, signed,
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Sunny."}]},
        {"role": "user", "content": "Thanks"}]})  # fmt: skip
    assert request.turns[1].content == [Thinking("Hmm.", signature="sig-1")]
    assert anthropic_encode(request)["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig-1"},
        {"type": "text", "text": "Sunny."},
    ]

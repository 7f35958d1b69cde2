"""The OpenAI chat request codec: decode into the internal request and encode back."""

from __future__ import annotations

import pytest

from gateway.codecs.gemini.request import encode as gemini_encode
from gateway.codecs.openai_chat.request import decode, encode
from gateway.codecs.request import Audio, File, Image, Text, ToolCall, ToolResult

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
FULL = {
    "model": "gpt-4o",
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Look", "cache_control": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR",
                                                "detail": "low"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER",
                                      "filename": "r.pdf"}},
            {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "mp3"}},
        ]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "W.",
                                                "parameters": SCHEMA, "strict": True}}],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "response_format": {"type": "json_schema",
                        "json_schema": {"name": "place", "schema": SCHEMA, "strict": True}},
    "max_completion_tokens": 300,
    "temperature": 0.2, "top_p": 0.9, "top_k": 4, "seed": 1, "presence_penalty": 0.5,
    "frequency_penalty": 0.25, "logit_bias": {"50256": -100}, "top_logprobs": 2,
    "stop": ["END"], "n": 2, "logprobs": True,
    "reasoning_effort": "low", "metadata": {"a": "b"}, "user": "u", "prompt_cache_key": "k",
    "service_tier": "flex", "store": False, "safety_identifier": "s",
    "modalities": ["text"], "verbosity": "low",
    "stream": True, "stream_options": {"include_usage": True},
    "x_vendor_flag": 1,  # unknown: kept
}  # fmt: skip


def test_every_field_is_decoded():
    request = decode(FULL)
    developer, user, assistant, tool = request.turns
    assert developer.role == "developer" and developer.content == [Text("Be brief.")]
    assert [type(part) for part in user.content] == [Text, Image, File, Audio]
    assert user.content[0].cache is not None
    assert user.content[1] == Image(data="iVBOR", media_type="image/png", detail="low")
    assert assistant.content == [Text("Checking."),
                                 ToolCall("call_1", "get_weather", '{"city":"Oslo"}')]  # fmt: skip
    assert tool.content == [ToolResult("call_1", [Text("sunny")])]
    assert request.tool_choice.mode == "required" and request.tool_choice.parallel is False
    assert request.output.kind == "json_schema" and request.output.schema == SCHEMA
    sampling = request.sampling
    assert (sampling.n, sampling.top_k, sampling.stop, sampling.logprobs) == (2, 4, ["END"], True)
    assert request.reasoning.effort == "low" and request.max_tokens == 300
    assert request.include_usage and request.extra == {"x_vendor_flag": 1}


def test_encode_gives_back_the_body_it_was_decoded_from():
    assert encode(decode(FULL)) == FULL


def test_legacy_functions_are_tools_and_their_turns_calls():
    body = {
        "model": "m",
        "functions": [{"name": "f", "parameters": SCHEMA}],
        "function_call": {"name": "f"},
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None,
             "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "done"},
        ],
    }  # fmt: skip
    request = decode(body)
    assert [tool.name for tool in request.tools] == ["f"]
    assert request.tool_choice.mode == "tool" and request.tool_choice.names == ["f"]
    call = request.turns[1].content[0]
    assert request.turns[2].content[0].call_id == call.id and call.name == "f"
    sent = gemini_encode(request)
    assert sent["contents"][2]["parts"][0]["functionResponse"]["name"] == "f"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": "x"},
        {"model": "m", "messages": [None, 3, {"role": "robot"}, {"role": "user", "content": 7}]},
        {"model": "m", "messages": [{"role": "assistant", "tool_calls": [None, {"function": 3}]}]},
        {"model": "m", "messages": [], "tools": [None, {"type": 3}], "tool_choice": {"x": 1}},
        {"model": "m", "messages": [], "response_format": {"type": "json_schema",
                                                           "json_schema": 5}},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "file", "file": 4},
                                                                 {"type": "image_url"}]}]},
    ],
)  # fmt: skip
def test_a_body_of_the_wrong_types_is_read_without_a_crash(body):
    """The edge refuses such bodies first; the codec, as the second line, never raises."""
    gemini_encode(decode(body))
    encode(decode(body))

"""The Anthropic Messages request codec: decode (with 400s naming the field), encode, and
the round trip that loses nothing."""

from __future__ import annotations

import pytest

from gateway.codecs.anthropic.request import decode, encode
from gateway.codecs.openai_chat import request as chat_request
from gateway.codecs.request import Cache, File, Image, Text, Thinking, ToolCall, ToolResult, Turn
from gateway.errors import GatewayError
from gateway.providers import ADAPTERS
from gateway.providers.carry import ANSWER_TOOL, TYPED, Unsupported, check_typed

CACHED = {"type": "ephemeral"}
FULL = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 4000,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": CACHED}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "Look", "cache_control": CACHED},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBOR"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": "JVBER"}, "title": "Report"},
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Hmm.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": "sunny", "is_error": True},
        ]},
    ],
    "tools": [
        {"name": "get_weather", "description": "Weather.", "strict": True,
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
         "cache_control": CACHED},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "stop_sequences": ["END"],
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "output_format": {"type": "json_schema", "schema": {"type": "object"}},
    "metadata": {"user_id": "user-7"},
    "service_tier": "auto",
    "cache_control": CACHED,
    "stream": True,
    "container": "container_1",  # a field the codec does not know: kept
}  # fmt: skip


def test_every_field_is_decoded_into_the_internal_request():
    request = decode(FULL)
    assert request.model == "claude-sonnet-4-5" and request.max_tokens == 4000
    assert request.stream and request.source == "anthropic"
    system, user, assistant, results = request.turns
    assert system.role == "system" and system.content == [Text("Be brief.", Cache())]
    assert user.content == [
        Text("Look", Cache()),
        Image(data="iVBOR", media_type="image/png"),
        File(data="JVBER", media_type="application/pdf", name="Report"),
    ]
    assert assistant.content == [
        Thinking("Hmm.", "sig-1"),
        Thinking(redacted="opaque"),
        Text("Checking."),
        ToolCall("toolu_1", "get_weather", '{"city":"Oslo"}'),
    ]
    assert results.content == [ToolResult("toolu_1", [Text("sunny")], is_error=True)]
    function, search = request.tools
    assert function.kind == "function" and function.strict is True and function.cache == Cache()
    assert search.kind == "web_search_20250305" and search.options == {"max_uses": 3}
    choice = request.tool_choice
    assert choice.mode == "required" and choice.parallel is False
    sampling = request.sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.5, 0.9, 40)
    assert sampling.stop == ["END"]
    assert request.reasoning.budget == 2048
    assert request.output.kind == "json_schema" and request.output.schema == {"type": "object"}
    assert request.user == "user-7" and request.service_tier == "auto"
    assert request.cache == Cache() and request.extra == {"container": "container_1"}


def test_encode_gives_back_the_body_it_was_decoded_from():
    assert encode(decode(FULL)) == FULL


def test_a_short_body_round_trips_too():
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    assert encode(decode(body)) == {**body, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}  # fmt: skip


@pytest.mark.parametrize(
    "change,param",
    [
        ({"model": 3}, "model"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]},
         "messages[0].content[0].text"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": "x"}]}]},
         "messages[0].content[0].source"),
        ({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [7]}]}]},
         "messages[0].content[0].content[0]"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"thinking": {"type": "enabled", "budget_tokens": "lots"}}, "thinking.budget_tokens"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"tool_choice": {"type": "maybe"}}, "tool_choice.type"),
        ({"tools": 5}, "tools"),
        ({"tools": [{"description": "no name"}]}, "tools[0]"),
        ({"tools": [{"name": "f", "input_schema": "x"}]}, "tools[0].input_schema"),
        ({"output_format": {"type": "json_schema", "schema": []}}, "output_format.schema"),
    ],
)  # fmt: skip
def test_a_bad_field_is_a_400_naming_its_path(change, param):
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(GatewayError) as refused:
        decode({**body, **change})
    assert refused.value.status == 400 and refused.value.param == param


@pytest.mark.parametrize("body", [None, [], "x", 3])
def test_a_body_that_is_no_object_is_a_400(body):
    with pytest.raises(GatewayError) as refused:
        decode(body)
    assert refused.value.status == 400


def test_every_carry_field_is_asked_of_the_internal_request():
    assert set(TYPED) == {
        field.name for field in __import__("gateway.providers.carry", fromlist=["FIELDS"]).FIELDS
    }


@pytest.mark.parametrize(
    "provider,refused_param",
    [
        ("openai", None),
        # (an Anthropic key gets the client's body as it is: nothing to check)
        ("gemini", "tools[1]"),  # the web search server tool
        ("claude_code", "output_format"),  # a CLI has no structured output (nor tools)
    ],
)
def test_each_provider_carries_or_refuses_the_full_request_by_the_clients_name(
    provider, refused_param
):
    adapter = ADAPTERS[provider]
    request = decode(FULL)
    if refused_param is None:
        check_typed(provider, adapter.carries, request, adapter.file_types)
        return
    with pytest.raises(Unsupported) as refused:
        check_typed(provider, adapter.carries, request, adapter.file_types)
    assert refused.value.param == refused_param


def test_a_refusal_names_the_anthropic_field_not_the_internal_one():
    body = {"model": "m", "max_tokens": 10, "system": "Be brief.", "stop_sequences": ["X"],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "a"},
                {"type": "document", "source": {"type": "file", "file_id": "f1"}}]}]}  # fmt: skip
    request = decode(body)
    gemini = ADAPTERS["gemini"]
    with pytest.raises(Unsupported) as refused:
        check_typed("gemini", gemini.carries, request, gemini.file_types)
    assert refused.value.param == "messages[0].content[1]"  # the system prompt is no turn
    cli = ADAPTERS["claude_code"]
    with pytest.raises(Unsupported) as refused:
        check_typed("claude_code", cli.carries, decode({**body, "messages": [
            {"role": "user", "content": "a"}]}), cli.file_types)  # fmt: skip
    assert refused.value.param == "stop_sequences"


# -- encoding another format's request: what Messages has no field for is emulated -------

HI = [{"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Be kind."},
      {"role": "user", "content": "Weather?"}]  # fmt: skip
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip
CITY = {"type": "json_schema", "json_schema": {"name": "city", "schema": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip


def from_chat(**fields) -> dict:
    """The Messages body an OpenAI chat body (`fields` over a plain one) is encoded as."""
    return encode(chat_request.decode({"model": "claude-sonnet-4-5", "messages": HI, **fields}))


def test_a_chat_request_keeps_its_system_prompt_as_one_string_and_a_default_length():
    body = from_chat(user="u-1", metadata={"k": "v"}, service_tier="flex", store=True)
    assert body["system"] == "Be brief.\n\nBe kind." and body["max_tokens"] == 4096
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}]
    # OpenAI's account hints mean nothing to Anthropic: only the end user's id goes up.
    assert body["metadata"] == {"user_id": "u-1"} and "service_tier" not in body


def test_structured_output_is_a_forced_answer_tool_when_no_tool_is_offered():
    body = from_chat(response_format=CITY)
    assert body["tools"] == [{"name": ANSWER_TOOL, "description": body["tools"][0]["description"],
                              "input_schema": CITY["json_schema"]["schema"]}]  # fmt: skip
    assert body["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}
    assert "output_format" not in body
    assert from_chat(response_format={"type": "json_object"})["tools"][0]["input_schema"] == {
        "type": "object"
    }


def test_structured_output_beside_tools_is_any_tool_and_left_to_the_model_when_thinking():
    body = from_chat(response_format=CITY, tools=[WEATHER], tool_choice="auto")
    assert [t["name"] for t in body["tools"]] == ["get_weather", ANSWER_TOOL]
    assert body["tool_choice"] == {"type": "any"}
    thinking = from_chat(response_format=CITY, reasoning_effort="low")
    assert thinking["tool_choice"] == {"type": "auto"}
    assert thinking["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def test_a_schema_whose_root_is_no_object_is_refused_by_the_clients_name():
    with pytest.raises(Unsupported) as refused:
        from_chat(response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "array"}}})  # fmt: skip
    assert refused.value.param == "response_format.json_schema.schema"


def test_legacy_functions_are_tools_and_their_turns_tool_calls_and_results():
    turns = [*HI, {"role": "assistant", "content": None,
                   "function_call": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
             {"role": "function", "name": "get_weather", "content": "sunny"}]  # fmt: skip
    body = from_chat(messages=turns, functions=[WEATHER["function"]],
                     function_call={"name": "get_weather"})  # fmt: skip
    assert body["tools"] == [{"name": "get_weather",
                              "input_schema": WEATHER["function"]["parameters"]}]  # fmt: skip
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    call = body["messages"][1]["content"][0]
    assert call == {"type": "tool_use", "id": call["id"], "name": "get_weather",
                    "input": {"city": "Oslo"}}  # fmt: skip
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}
    ]


def test_allowed_tools_offers_only_the_tools_it_names_in_its_mode():
    other = {"type": "function", "function": {"name": "get_time"}}
    allowed = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "get_time"}}],
        },
    }
    body = from_chat(tools=[WEATHER, other], tool_choice=allowed)  # fmt: skip
    assert [t["name"] for t in body["tools"]] == ["get_time"]
    assert body["tool_choice"] == {"type": "any"}
    allowed["allowed_tools"]["mode"] = "auto"
    assert from_chat(tools=[WEATHER, other], tool_choice=allowed)["tool_choice"] == {"type": "auto"}
    allowed["allowed_tools"]["tools"] = [{"type": "function", "function": {"name": "gone"}}]
    nothing = from_chat(tools=[WEATHER, other], tool_choice=allowed)
    assert "tools" not in nothing and "tool_choice" not in nothing


def test_a_pdf_part_is_a_document_titled_with_its_file_name():
    pdf = {"type": "file", "file": {"filename": "a.pdf",
                                    "file_data": "data:application/pdf;base64,JVBER"}}  # fmt: skip
    body = from_chat(messages=[{"role": "user", "content": [pdf]}])
    assert body["messages"][0]["content"] == [{"type": "document", "title": "a.pdf", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBER"}}]  # fmt: skip


@pytest.mark.parametrize(
    "fields,thinking,most",
    [
        ({"reasoning_effort": "high"}, 16384, 16384 + 1024),  # the length grows to hold it
        ({"reasoning_effort": "high", "max_tokens": 3000}, 1976, 3000),  # fitted under it
        ({"reasoning_effort": "low", "max_completion_tokens": 1000}, None, 1000),  # no room
        ({"reasoning_effort": "none"}, None, 4096),
    ],
)
def test_a_reasoning_effort_is_a_thinking_budget_below_max_tokens(fields, thinking, most):
    body = from_chat(**fields)
    assert body["max_tokens"] == most
    assert body.get("thinking") == (
        {"type": "enabled", "budget_tokens": thinking} if thinking else None
    )


def test_unsigned_reasoning_of_another_format_is_not_sent_as_a_thinking_block():
    request = chat_request.decode({"model": "m", "messages": HI})
    request.turns.append(Turn("assistant", [Thinking("Hmm."), Text("Sunny.")]))
    request.turns.append(Turn("user", [Text("Thanks")]))
    assert encode(request)["messages"][1] == {
        "role": "assistant", "content": [{"type": "text", "text": "Sunny."}]}  # fmt: skip

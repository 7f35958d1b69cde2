"""The Gemini request codec: the internal request encoded as a generateContent body."""

from __future__ import annotations

from gateway.codecs.gemini.request import SKIP_SIGNATURE, encode
from gateway.codecs.request import (
    Audio,
    File,
    Image,
    Output,
    Reasoning,
    Request,
    Sampling,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    Turn,
)

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_turns_parts_and_tool_round_trip():
    request = Request(
        model="gemini-2.5-flash",
        turns=[
            Turn("system", [Text("Be brief.")]),
            Turn("user", [
                Text("Look"),
                Image(data="iVBOR", media_type="image/png"),
                Image(url="https://example.com/cat.jpg"),
                File(data="JVBER", media_type="application/pdf"),
                File(text="plain notes"),
                Audio("UklGR", "mp3"),
            ]),
            Turn("assistant", [Thinking("Hmm.", "anthropic-sig"), Text("Checking."),
                               ToolCall("call_1", "get_weather", '{"city":"Oslo"}')]),
            Turn("user", [ToolResult("call_1", [Text('{"temp": 3}')]), Text("And now?")]),
        ],
    )  # fmt: skip
    body = encode(request)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [
            {"text": "Look"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBER"}},
            {"text": "plain notes"},
            {"inlineData": {"mimeType": "audio/mp3", "data": "UklGR"}},
        ]},
        # thinking given back goes nowhere: its signature is another provider's
        {"role": "model", "parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 3}}},
            {"text": "And now?"},
        ]},
    ]  # fmt: skip
    assert "generationConfig" not in body and "tools" not in body


def test_sampling_output_and_thinking_are_the_generation_config():
    request = Request(
        model="gemini-2.5-pro",
        turns=[Turn("user", [Text("hi")])],
        sampling=Sampling(temperature=0.3, top_p=0.8, top_k=20, stop=["END"], seed=7,
                          presence_penalty=0.1, frequency_penalty=0.2, n=2, logprobs=True,
                          top_logprobs=3),
        max_tokens=500,
        output=Output("json_schema", SCHEMA),
        reasoning=Reasoning(budget=4096),
    )  # fmt: skip
    assert encode(request)["generationConfig"] == {
        "temperature": 0.3, "topP": 0.8, "topK": 20, "presencePenalty": 0.1,
        "frequencyPenalty": 0.2, "seed": 7, "maxOutputTokens": 500, "stopSequences": ["END"],
        "candidateCount": 2, "responseMimeType": "application/json",
        "responseJsonSchema": SCHEMA, "responseLogprobs": True, "logprobs": 3,
        "thinkingConfig": {"thinkingBudget": 4096},
    }  # fmt: skip


def test_thinking_by_effort_and_off():
    def config(reasoning):
        request = Request(model="m", turns=[Turn("user", [Text("hi")])], reasoning=reasoning)
        return encode(request)["generationConfig"]["thinkingConfig"]

    assert config(Reasoning(effort="high")) == {"thinkingBudget": 24576}
    assert config(Reasoning(off=True)) == {"thinkingBudget": 0}
    assert config(Reasoning(budget=64000)) == {"thinkingBudget": 24576}  # Flash's most


def test_a_pro_models_budget_stays_in_its_range_and_it_always_thinks():
    def sent(reasoning):
        request = Request(model="gemini-2.5-pro", turns=[Turn("user", [Text("hi")])],
                          reasoning=reasoning)  # fmt: skip
        return encode(request).get("generationConfig", {}).get("thinkingConfig")

    assert sent(Reasoning(budget=64000)) == {"thinkingBudget": 32768}
    assert sent(Reasoning(effort="minimal")) == {"thinkingBudget": 128}
    assert sent(Reasoning(off=True)) is None


def test_tools_and_each_tool_choice():
    tools = [Tool("a", parameters=SCHEMA, description="A."), Tool("b"),
             Tool("web_search", kind="web_search_20250305")]  # fmt: skip

    def sent(choice):
        request = Request(model="m", turns=[Turn("user", [Text("x")])], tools=tools,
                          tool_choice=choice)  # fmt: skip
        return encode(request)

    body = sent(None)
    declared = {"name": "a", "description": "A.", "parametersJsonSchema": SCHEMA}
    assert body["tools"] == [{"functionDeclarations": [declared, {"name": "b"}]}]
    assert "toolConfig" not in body
    modes = {
        "auto": {"mode": "AUTO"},
        "none": {"mode": "NONE"},
        "required": {"mode": "ANY"},
    }
    for mode, config in modes.items():
        assert sent(ToolChoice(mode))["toolConfig"] == {"functionCallingConfig": config}
    assert sent(ToolChoice("tool", ["b"]))["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["b"]}
    }
    allowed = sent(ToolChoice("allowed", ["b"], required=True))
    assert allowed["tools"] == [{"functionDeclarations": [{"name": "b"}]}]
    assert allowed["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def test_gemini_3_gets_a_stand_in_signature_on_a_turns_first_call_only():
    calls = [ToolCall("c1", "f", "{}"), ToolCall("c2", "f", "{}"),
             ToolCall("c3", "g", "{}", signature="own")]  # fmt: skip
    request = Request(model="gemini-3-pro-preview", turns=[
        Turn("user", [Text("go")]), Turn("assistant", calls)])  # fmt: skip
    parts = encode(request)["contents"][1]["parts"]
    assert [part.get("thoughtSignature") for part in parts] == [SKIP_SIGNATURE, None, "own"]


def test_a_tool_error_and_a_text_result():
    request = Request(model="m", turns=[
        Turn("assistant", [ToolCall("c1", "f", "not json")]),
        Turn("user", [ToolResult("c1", [Text("boom")], is_error=True)]),
        Turn("assistant", [ToolCall("c2", "f", "{}")]),
        Turn("tool", [ToolResult("c2", [Text("plain")])]),
    ])  # fmt: skip
    contents = encode(request)["contents"]
    assert contents[0]["parts"] == [{"functionCall": {"name": "f", "args": {}}}]
    assert contents[1]["parts"][0]["functionResponse"]["response"] == {"error": "boom"}
    assert contents[3]["parts"][0]["functionResponse"] == {
        "name": "f", "response": {"result": "plain"}}  # fmt: skip

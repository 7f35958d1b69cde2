"""Gemini generateContent requests: `encode` the internal request into the body a
`generateContent` / `streamGenerateContent` call takes (no Gemini client dialect exists, so
no decode)."""

from __future__ import annotations

import mimetypes
import re

import orjson

from gateway.codecs.request import (
    Audio,
    File,
    Image,
    Part,
    Request,
    Text,
    ToolCall,
    ToolChoice,
    ToolResult,
    Turn,
)
from gateway.providers.gemini_sse import SIGNATURES

FORMAT = "gemini"
THINKING_BUDGETS = {"minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
# Google's documented stand-in for a thought signature lost on the way (the call came
# from another worker, or before a restart): Gemini 3 takes it instead of refusing.
SKIP_SIGNATURE = "skip_thought_signature_validator"
_MAJOR = re.compile(r"gemini-(\d+)")


def encode(request: Request) -> dict:
    """The internal request as a generateContent request. Cache marks go nowhere (Gemini
    caches prompts by itself); thinking given back goes nowhere either (its signature is
    another provider's, or Gemini's own comes back with the call it signed)."""
    system: list[str] = []
    contents: list[dict] = []
    names: dict[str, str] = {}  # tool call id → function name, for the tool results
    signed = signs_calls(request.model)
    for turn in request.turns:
        if turn.role in ("system", "developer"):
            text = "".join(p.text for p in turn.content if isinstance(p, Text))
            if text:
                system.append(text)
        elif turn.role == "assistant":
            _append(contents, "model", _model_parts(turn, names, signed))
        else:
            _append(contents, "user", _user_parts(turn, names))
    out: dict = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config = generation_config(request)
    if config:
        out["generationConfig"] = config
    tools = request.offered_tools()
    declarations = [_declaration(tool) for tool in tools if tool.kind == "function"]
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
        choice = _tool_config(request.tool_choice)
        if choice is not None:
            out["toolConfig"] = {"functionCallingConfig": choice}
    return out


def signs_calls(model: str) -> bool:
    """Whether the model wants its function calls' thought signatures back (Gemini 3+)."""
    found = _MAJOR.match(model.removeprefix("models/"))
    return found is not None and int(found.group(1)) >= 3


def _append(contents: list[dict], role: str, parts: list[dict]) -> None:
    """Add parts, merging into the last turn of the same role (turns alternate, and the
    results of parallel calls go back in one turn)."""
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"] += parts
    else:
        contents.append({"role": role, "parts": list(parts)})


def _user_parts(turn: Turn, names: dict[str, str]) -> list[dict]:
    """A user turn's parts; its tool results first (they answer the previous turn)."""
    results, parts = [], []
    for part in turn.content:
        if isinstance(part, ToolResult):
            name = names.get(part.call_id) or part.name or turn.name or ""
            results.append({"functionResponse": {"name": name, "response": _result(part)}})
        else:
            parts += _part(part)
    return results + parts


def _part(part: Part) -> list[dict]:
    if isinstance(part, Text):
        return [{"text": part.text}] if part.text else []
    if isinstance(part, Image):
        if part.data is not None:
            media = part.media_type or "image/png"
            return [{"inlineData": {"mimeType": media, "data": part.data}}]
        url = part.url or ""
        if url.startswith("data:") and ";base64," in url:
            media, data = url[5:].split(";base64,", 1)
            return [{"inlineData": {"mimeType": media, "data": data}}]
        media = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
        return [{"fileData": {"mimeType": media, "fileUri": url}}]
    if isinstance(part, File):
        if part.text is not None:
            return [{"text": part.text}]
        if part.data is not None:
            media = part.media_type or "application/pdf"
            return [{"inlineData": {"mimeType": media, "data": part.data}}]
        if part.url is not None:
            media = part.media_type or "application/pdf"
            return [{"fileData": {"mimeType": media, "fileUri": part.url}}]
        return []  # a file by another upstream's id: refused before (carry)
    if isinstance(part, Audio):
        return [{"inlineData": {"mimeType": "audio/" + part.format, "data": part.data}}]
    return []  # thinking given back, and calls in a user turn, carry nothing here


def _model_parts(turn: Turn, names: dict[str, str], signed: bool) -> list[dict]:
    parts: list[dict] = []
    text = "".join(p.text for p in turn.content if isinstance(p, Text))
    if text:
        parts.append({"text": text})
    first = True
    for call in (p for p in turn.content if isinstance(p, ToolCall)):
        names[call.id] = call.name
        part: dict = {"functionCall": {"name": call.name, "args": _object(call.arguments)}}
        signature = call.signature or SIGNATURES.get(call.id)
        if signature is None and signed and first:  # only a turn's first call carries one
            signature = SKIP_SIGNATURE
        if signature is not None:
            part["thoughtSignature"] = signature
        first = False
        parts.append(part)
    return parts


def _object(arguments: str) -> dict:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _result(result: ToolResult) -> dict:
    """A tool's output as functionResponse.response, which must be an object: a JSON
    object as it is, anything else under `result`."""
    text = "".join(p.text for p in result.content if isinstance(p, Text))
    if result.is_error:
        return {"error": text}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"result": text}


def generation_config(request: Request) -> dict:
    """Sampling, the answer's length, the output format and thinking, as Gemini names them."""
    config: dict = {}
    sampling = request.sampling
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if getattr(sampling, ours) is not None:
            config[theirs] = getattr(sampling, ours)
    if request.max_tokens:
        config["maxOutputTokens"] = request.max_tokens
    if sampling.stop:
        config["stopSequences"] = list(sampling.stop)
    if sampling.n > 1:
        config["candidateCount"] = sampling.n
    output = request.output
    if output is not None and output.kind != "text":
        config["responseMimeType"] = "application/json"
        if output.kind == "json_schema" and output.schema is not None:
            config["responseJsonSchema"] = output.schema
    if sampling.logprobs or sampling.top_logprobs:
        config["responseLogprobs"] = True
        if sampling.top_logprobs:
            config["logprobs"] = sampling.top_logprobs
    thinking = _thinking(request)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    return config


def _thinking(request: Request) -> dict | None:
    """A thinking budget within what Gemini takes (Pro models: 128 to 32,768 and no way to
    turn thinking off; others up to 24,576)."""
    reasoning = request.reasoning
    if reasoning is None:
        return None
    pro = "-pro" in request.model
    if reasoning.off:
        return None if pro else {"thinkingBudget": 0}
    budget = reasoning.budget
    if budget is None:
        budget = THINKING_BUDGETS.get(reasoning.effort or "")
    if budget is None:
        return None
    most = 32768 if pro else 24576
    return {"thinkingBudget": min(max(budget, 128 if pro else 0), most)}


def _declaration(tool) -> dict:
    """A function as a declaration; its JSON schema goes as `parametersJsonSchema`, which
    takes JSON Schema whole (`parameters` takes only an OpenAPI subset)."""
    out: dict = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    if tool.parameters is not None:
        out["parametersJsonSchema"] = tool.parameters
    return out


def _tool_config(choice: ToolChoice | None) -> dict | None:
    if choice is None:
        return None
    if choice.mode == "tool":
        return {"mode": "ANY", "allowedFunctionNames": choice.names[:1]}
    if choice.mode == "allowed":
        return {"mode": "ANY" if choice.required else "AUTO"}
    return {"auto": {"mode": "AUTO"}, "required": {"mode": "ANY"},
            "none": {"mode": "NONE"}}[choice.mode]  # fmt: skip

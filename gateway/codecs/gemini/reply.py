"""Gemini's generateContent answer → the internal reply (a candidate is a choice)."""

from __future__ import annotations

import uuid

import orjson

from gateway.codecs.reply import Choice, Reply, Text, Thinking, ToolCall, Usage, stop_with_calls
from gateway.codecs.usage import count

STOPS = {
    "STOP": "end",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


def decode(answer: dict, model: str = "", one_call: bool = False) -> Reply:
    """A GenerateContentResponse (parsed JSON) as the internal reply (`one_call`: a turn's
    first function call only)."""
    candidates = [c for c in answer.get("candidates") or () if isinstance(c, dict)]
    choices = [choice_of(c, number, one_call) for number, c in enumerate(candidates)]
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        block = (answer.get("promptFeedback") or {}).get("blockReason")
        choices = [Choice(0, [], "content_filter", block if isinstance(block, str) else None)]
    version = answer.get("modelVersion")
    return Reply(
        id=str(answer.get("responseId") or uuid.uuid4().hex),
        model=version if isinstance(version, str) and version else model,
        choices=choices,
        usage=usage_of(answer.get("usageMetadata")),
    )


def choice_of(candidate: dict, number: int, one_call: bool = False) -> Choice:
    """A whole candidate as a choice: thoughts, then text, then calls, as OpenAI orders them."""
    thoughts, texts, calls = [], [], []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("functionCall"), dict):
            calls.append(call_of(part))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part)
    calls = calls[:1] if one_call else calls
    parts: list = []
    if thoughts:
        signature = next((p["thoughtSignature"] for p in thoughts if p.get("thoughtSignature")), "")
        parts.append(Thinking("".join(p["text"] for p in thoughts), str(signature)))
    if texts:
        parts.append(Text("".join(p["text"] for p in texts), logprobs=logprobs_of(candidate)))
    parts += calls
    raw = candidate.get("finishReason")
    stop = STOPS.get(raw, "end") if isinstance(raw, str) else None
    index = candidate.get("index")
    return Choice(
        index if isinstance(index, int) else number,
        parts,
        stop_with_calls(stop if stop is not None else "end", bool(calls)),
        raw if isinstance(raw, str) else None,
    )


def call_of(part: dict) -> ToolCall:
    """A `functionCall` part as a tool call, its arguments JSON text."""
    call = part["functionCall"]
    signature = part.get("thoughtSignature")
    return ToolCall(
        str(call.get("id") or "call_" + uuid.uuid4().hex[:24]),
        str(call.get("name", "")),
        orjson.dumps(call.get("args") or {}).decode(),
        signature if isinstance(signature, str) else "",
    )


def logprobs_of(candidate: dict) -> list[dict] | None:
    """A candidate's `logprobsResult` as OpenAI's per-token log probabilities."""
    result = candidate.get("logprobsResult")
    if not isinstance(result, dict):
        return None
    tops = [t for t in result.get("topCandidates") or () if isinstance(t, dict)]
    content = []
    for number, chosen in enumerate(result.get("chosenCandidates") or ()):
        if not isinstance(chosen, dict):
            continue
        top = tops[number].get("candidates") or () if number < len(tops) else ()
        entry = _logprob(chosen)
        entry["top_logprobs"] = [_logprob(c) for c in top if isinstance(c, dict)]
        content.append(entry)
    return content


def _logprob(candidate: dict) -> dict:
    token = str(candidate.get("token", ""))
    value = candidate.get("logProbability")
    return {
        "token": token,
        "logprob": value if isinstance(value, int | float) else 0.0,
        "bytes": list(token.encode()),
    }


def usage_of(metadata: object) -> Usage | None:
    """`usageMetadata` as the internal usage: the prompt (with tool-use prompt tokens) is
    the input, cached content a cache read within it; the answer and the thoughts are the
    output (both billed as output), the thoughts its reasoning."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get("promptTokenCount"), int):
        return None
    thoughts = count(metadata.get("thoughtsTokenCount"))
    return Usage(
        count(metadata.get("promptTokenCount")) + count(metadata.get("toolUsePromptTokenCount")),
        count(metadata.get("candidatesTokenCount")) + thoughts,
        cache_read=count(metadata.get("cachedContentTokenCount")),
        reasoning=thoughts,
    )

"""Gemini's answers as OpenAI chat: a candidate as a choice, `usageMetadata` as usage, and
a `streamGenerateContent?alt=sse` stream as OpenAI chat chunks."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict

import orjson

from gateway.policy import Outcome
from gateway.providers.transport import TransportError
from gateway.usage import Usage

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


class Signatures:
    """Thought signatures of the function calls this process handed out, by tool call id.

    Gemini 3 refuses a conversation whose earlier function calls come back without the
    `thoughtSignature` they were sent with; OpenAI's tool calls have no field for it, so
    it is kept here (bounded, oldest dropped) and put back when the call returns."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._by_id: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, call_id: str, signature: str) -> None:
        with self._lock:
            self._by_id[call_id] = signature
            while len(self._by_id) > self.size:
                self._by_id.popitem(last=False)

    def get(self, call_id: str) -> str | None:
        with self._lock:
            return self._by_id.get(call_id)


SIGNATURES = Signatures()


def usage_of(metadata: object) -> Usage | None:
    """`usageMetadata` as the gateway's usage: the prompt (with tool-use prompt tokens)
    is the input, cached content a cache read within it; the answer and the model's
    thoughts are the output (both are billed as output)."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get("promptTokenCount"), int):
        return None

    def count(name: str) -> int:
        value = metadata.get(name)
        return value if isinstance(value, int) else 0

    prompt = count("promptTokenCount") + count("toolUsePromptTokenCount")
    output = count("candidatesTokenCount") + count("thoughtsTokenCount")
    return Usage(prompt, output, cache_read=count("cachedContentTokenCount"))


def openai_usage(usage: Usage, metadata: object) -> dict:
    thoughts = metadata.get("thoughtsTokenCount") if isinstance(metadata, dict) else None
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read},
        "completion_tokens_details": {
            "reasoning_tokens": thoughts if isinstance(thoughts, int) else 0
        },
    }


def finish_reason(reason: object, called: bool) -> str:
    """OpenAI's finish reason for Gemini's; a turn that called functions ends in
    `tool_calls` (Gemini says STOP)."""
    mapped = FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if called and mapped == "stop" else mapped


def tool_call(part: dict, number: int | None = None) -> dict:
    """A `functionCall` part as an OpenAI tool call, its arguments a JSON string (its
    thought signature kept for when the call comes back)."""
    call = part["functionCall"]
    call_id = call.get("id") or "call_" + uuid.uuid4().hex[:24]
    if isinstance(part.get("thoughtSignature"), str):
        SIGNATURES.keep(call_id, part["thoughtSignature"])
    out = {
        "id": call_id,
        "type": "function",
        "function": {
            "name": call.get("name", ""),
            "arguments": orjson.dumps(call.get("args") or {}).decode(),
        },
    }
    return out if number is None else {"index": number, **out}


def split_parts(candidate: dict) -> tuple[list[str], list[str], list[dict]]:
    """(texts, thoughts, function call parts) of a candidate's parts."""
    texts, thoughts, calls = [], [], []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("functionCall"), dict):
            calls.append(part)
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
    return texts, thoughts, calls


def logprobs_of(candidate: dict) -> dict | None:
    """A candidate's `logprobsResult` as OpenAI's choice `logprobs` (None without one)."""
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
    return {"content": content, "refusal": None}


def _logprob(candidate: dict) -> dict:
    token = str(candidate.get("token", ""))
    value = candidate.get("logProbability")
    return {
        "token": token,
        "logprob": value if isinstance(value, int | float) else 0.0,
        "bytes": list(token.encode()),
    }


def choice_of(candidate: dict, number: int, one_call: bool = False) -> dict:
    """A whole candidate as an OpenAI chat choice (`one_call`: its first call only)."""
    texts, thoughts, calls = split_parts(candidate)
    calls = calls[:1] if one_call else calls
    message: dict = {"role": "assistant", "content": "".join(texts) or None, "refusal": None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = [tool_call(call) for call in calls]
    return {
        "index": candidate.get("index", number),
        "message": message,
        "logprobs": logprobs_of(candidate),
        "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
    }


class GeminiStream:
    """Turns a `streamGenerateContent?alt=sse` stream into OpenAI chat chunks. Google
    sends no end event: the stream is over when every candidate has a finish reason (that
    chunk carries the final `usageMetadata`), and then the finish, usage and `[DONE]`
    chunks go out. Usage is read only from a finished stream: a cut one is estimated."""

    def __init__(self, model: str, wants_usage: bool, one_call: bool = False) -> None:
        self.model, self.wants_usage = model, wants_usage
        self.one_call = one_call  # a turn's first function call only
        self.done = False
        self._buffer = b""
        self._metadata: dict | None = None
        self._text: list[str] = []
        self._billed: list[str] = []  # the text, thoughts and function calls, in order
        self._id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self._created = int(time.time())
        self._calls: dict[int, int] = {}  # choice → tool calls sent
        self._open: set[int] = set()  # choices begun and not finished

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        if b"\r" in data:
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        while not self.done and (end := self._buffer.find(b"\n\n")) != -1:
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            out += self._event(event)
        return out

    def _event(self, event: bytes) -> list[bytes]:
        data = b"".join(
            line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")
        )
        try:
            answer = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            return []
        if isinstance(answer.get("error"), dict):
            message = answer["error"].get("message", "")
            raise TransportError(Outcome.SERVER_ERROR, f"upstream stream error: {message}")
        if isinstance(answer.get("usageMetadata"), dict):
            self._metadata = answer["usageMetadata"]
        self.model = answer.get("modelVersion") or self.model
        candidates = [c for c in answer.get("candidates") or () if isinstance(c, dict)]
        if not candidates and (answer.get("promptFeedback") or {}).get("blockReason"):
            candidates = [{"index": 0, "finishReason": "PROHIBITED_CONTENT"}]
        out: list[bytes] = []
        for number, candidate in enumerate(candidates):
            out += self._candidate(candidate.get("index", number), candidate)
        if candidates and not self._open:
            self.done = True
            out += self._end()
        return out

    def _candidate(self, index: int, candidate: dict) -> list[bytes]:
        out = []
        if index not in self._calls:
            self._calls[index] = 0
            self._open.add(index)
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        texts, thoughts, calls = split_parts(candidate)
        if self.one_call:
            calls = calls[: max(0, 1 - self._calls[index])]
        logprobs = logprobs_of(candidate)
        if thoughts:
            self._billed += thoughts
            out.append(self._chunk(index, {"reasoning_content": "".join(thoughts)}))
        if texts:
            text = "".join(texts)
            self._text.append(text)
            self._billed.append(text)
            out.append(self._chunk(index, {"content": text}, logprobs=logprobs))
        if calls:
            first = self._calls[index]
            pieces = [tool_call(call, first + n) for n, call in enumerate(calls)]
            self._billed += [p["function"]["name"] + p["function"]["arguments"] for p in pieces]
            self._calls[index] += len(calls)
            out.append(self._chunk(index, {"tool_calls": pieces}))
        if candidate.get("finishReason") and index in self._open:
            self._open.discard(index)
            reason = finish_reason(candidate["finishReason"], self._calls[index] > 0)
            out.append(self._chunk(index, {}, reason))
        return out

    def _end(self) -> list[bytes]:
        out = []
        usage = self.read_usage()
        if self.wants_usage and usage is not None:
            chunk = self._base()
            chunk.update(choices=[], usage=openai_usage(usage, self._metadata))
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out

    def _base(self) -> dict:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
        }

    def _chunk(self, index: int, delta: dict, finish: str | None = None, logprobs=None) -> bytes:
        chunk = self._base()
        chunk["choices"] = [
            {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        ]
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def read_usage(self) -> Usage | None:
        return usage_of(self._metadata) if self.done else None

    def completion_text(self) -> str:
        return "".join(self._text)

    def billable_text(self) -> str:
        return "".join(self._billed)

"""Gemini's streams: a `streamGenerateContent?alt=sse` stream read into the internal stream
events, `usageMetadata` as the gateway's usage, and the thought signatures of the
function calls handed out."""

from __future__ import annotations

import threading
from collections import OrderedDict

import orjson

from gateway.codecs import events as ev
from gateway.codecs.gemini import reply as codec
from gateway.codecs.parts import Parts
from gateway.codecs.reply import stop_with_calls
from gateway.ledger.usage import Usage
from gateway.policy import Outcome
from gateway.providers.transport import TransportError


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


class GeminiStream:
    """Reads a `streamGenerateContent?alt=sse` stream into the internal stream events.
    Google sends no end event: the stream is over when every candidate has a finish
    reason (that chunk carries the final `usageMetadata`). Usage is read only from a
    finished stream: a cut one is estimated."""

    def __init__(self, model: str, one_call: bool = False) -> None:
        self.model = model
        self.one_call = one_call  # a turn's first function call only
        self.done = False
        self._buffer = b""
        self._metadata: dict | None = None
        self._text: list[str] = []
        self._billed: list[str] = []  # the text, thoughts and function calls, in order
        self._parts = Parts()
        self._calls: dict[int, int] = {}  # choice → tool calls sent
        self._open: set[int] = set()  # choices begun and not finished

    def feed(self, data: bytes) -> list:
        self._buffer += data
        if b"\r" in data:
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        out: list = []
        while not self.done and (end := self._buffer.find(b"\n\n")) != -1:
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            out += self._event(event)
        return out

    def _event(self, event: bytes) -> list:
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
        out: list = []
        if not self._calls and not self._open:
            self.model = answer.get("modelVersion") or self.model
            out.append(ev.Start(str(answer.get("responseId") or ""), self.model))
        candidates = [c for c in answer.get("candidates") or () if isinstance(c, dict)]
        if not candidates and (answer.get("promptFeedback") or {}).get("blockReason"):
            candidates = [{"index": 0, "finishReason": "PROHIBITED_CONTENT"}]
        for number, candidate in enumerate(candidates):
            out += self._candidate(candidate.get("index", number), candidate)
        if candidates and not self._open:
            self.done = True
            usage = codec.usage_of(self._metadata)
            if usage is not None:
                out.append(ev.UsageEvent(usage))
            out.append(ev.End())
        return out

    def _candidate(self, index: int, candidate: dict) -> list:
        out: list = []
        parts = self._parts
        if index not in self._calls:
            self._calls[index] = 0
            self._open.add(index)
        logprobs = codec.logprobs_of(candidate)  # of the candidate's text in this chunk
        for part in (candidate.get("content") or {}).get("parts") or ():
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("functionCall"), dict):
                if self.one_call and self._calls[index] >= 1:
                    continue
                call = codec.call_of(part)
                if call.signature:  # handed back with the call when it returns
                    SIGNATURES.keep(call.id, call.signature)
                self._calls[index] += 1
                self._billed.append(call.name + call.arguments)
                out += parts.call(index, call.id, call.id, call.name, call.arguments)
            elif isinstance(part.get("text"), str) and part["text"]:
                text = part["text"]
                self._billed.append(text)
                if part.get("thought"):
                    out += parts.delta(index, "thinking", text)
                    if isinstance(part.get("thoughtSignature"), str):
                        out.append(
                            ev.Signature(parts.open[index][1], part["thoughtSignature"], index)
                        )
                else:
                    self._text.append(text)
                    out += parts.delta(index, "text", text, logprobs)
                    logprobs = None
        raw = candidate.get("finishReason")
        if raw and index in self._open:
            self._open.discard(index)
            stop = stop_with_calls(codec.STOPS.get(raw, "end"), self._calls[index] > 0)
            out += parts.stop(index, stop, raw)
        return out

    def read_usage(self) -> Usage | None:
        return usage_of(self._metadata) if self.done else None

    def completion_text(self) -> str:
        return "".join(self._text)

    def billable_text(self) -> str:
        return "".join(self._billed)

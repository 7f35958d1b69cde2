"""OpenAI chat stream chunks ⇄ the internal stream events."""

from __future__ import annotations

import time
import uuid

from gateway.codecs import events as ev
from gateway.codecs.openai_chat.reply import STOPS, encode_usage, finish_reason, usage_of
from gateway.codecs.parts import Parts
from gateway.codecs.sse import data, data_of, json_of
from gateway.codecs.stream import Naming


class Decoder:
    """Chat chunks (SSE events) in, internal events out."""

    def __init__(self) -> None:
        self.started = False
        self.parts = Parts()

    def feed(self, events: list[bytes]) -> list:
        out: list = []
        for event in events:
            data = data_of(event)
            if data == b"[DONE]":
                out += self.parts.close_all()
                out.append(ev.End())
                continue
            chunk = json_of(event, data) if data is not None else None
            if chunk is None:
                continue
            if not self.started:
                self.started = True
                model = chunk.get("model")
                out.append(
                    ev.Start(str(chunk.get("id") or ""), model if isinstance(model, str) else "")
                )
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict):
                    out += self._choice(choice)
            usage = usage_of(chunk.get("usage"))
            if usage is not None:
                out.append(ev.UsageEvent(usage))
        return out

    def _choice(self, choice: dict) -> list:
        out: list = []
        parts = self.parts
        number = choice.get("index") if isinstance(choice.get("index"), int) else 0
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        thinking = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thinking, str) and thinking:
            out += parts.delta(number, "thinking", thinking)
        text = delta.get("content")
        if isinstance(text, str) and text:
            logprobs = choice.get("logprobs")
            logprobs = logprobs.get("content") if isinstance(logprobs, dict) else None
            out += parts.delta(number, "text", text, logprobs)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            out += parts.delta(number, "refusal", refusal)
        for call in delta.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                name, arguments = function.get("name"), function.get("arguments")
                out += parts.call(
                    number,
                    call.get("index", 0),
                    str(call.get("id") or "call_" + uuid.uuid4().hex[:24]),
                    name if isinstance(name, str) else "",
                    arguments if isinstance(arguments, str) else "",
                )
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            out += parts.stop(number, STOPS.get(reason, "end"), reason)
        return out


class Encoder(Naming):
    """Internal events in, chat chunks out (`wants_usage`: the usage chunk is sent). A chat
    stream has no place for citations, redacted thinking or another format's blocks: they
    are named before its end."""

    def __init__(self, model: str = "", wants_usage: bool = False) -> None:
        super().__init__()
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.model = model
        self.created = int(time.time())
        self.wants_usage = wants_usage
        self.usage = None
        self.calls: dict[int, tuple[int, int]] = {}  # part index → (choice, call number)
        self.counts: dict[int, int] = {}  # choice → tool calls so far

    def feed(self, events: list) -> list[bytes]:
        out: list[bytes] = []
        pending = None  # a call's start, sent with its first arguments if they follow
        for event in events:
            kind = type(event)
            if pending is not None:
                if kind is ev.ArgumentsDelta and event.index == pending[1]:
                    pending[2]["function"]["arguments"] = event.text
                    out.append(self._chunk(pending[0], {"tool_calls": [pending[2]]}))
                    pending = None
                    continue
                out.append(self._chunk(pending[0], {"tool_calls": [pending[2]]}))
                pending = None
            if kind is ev.TextDelta:
                out.append(self._chunk(event.choice, {"content": event.text}, None, event.logprobs))
            elif kind is ev.ThinkingDelta:
                out.append(self._chunk(event.choice, {"reasoning_content": event.text}))
            elif kind is ev.ArgumentsDelta:
                _, number = self.calls.get(event.index, (0, 0))
                piece = {"index": number, "function": {"arguments": event.text}}
                out.append(self._chunk(event.choice, {"tool_calls": [piece]}))
            elif kind is ev.PartStart and event.kind == "tool_call":
                number = self.counts.get(event.choice, 0)
                self.counts[event.choice] = number + 1
                self.calls[event.index] = (event.choice, number)
                call = {
                    "index": number,
                    "id": event.id,
                    "type": "function",
                    "function": {"name": event.name, "arguments": ""},
                }
                pending = (event.choice, event.index, call)
            elif kind is ev.RefusalDelta:
                out.append(self._chunk(event.choice, {"refusal": event.text}))
            elif kind is ev.Start:
                self.model = event.model or self.model
                if event.usage is not None:
                    self.usage = event.usage
                out.append(self._chunk(0, {"role": "assistant", "content": ""}))
            elif kind is ev.Stop:
                out.append(self._chunk(event.choice, {}, finish_reason(event.reason)))
            elif kind is ev.UsageEvent:
                self.usage = event.usage
            elif kind is ev.End:
                out += self.end()
            elif kind is ev.Citation:
                self.leave_out(f"citations ({event.annotation.get('type')})")
            elif kind is ev.PartStart and event.redacted:
                self.leave_out("redacted_thinking")
            elif kind is ev.Block:
                self.leave_out(event.kind)
        if pending is not None:
            out.append(self._chunk(pending[0], {"tool_calls": [pending[2]]}))
        return out

    def end(self) -> list[bytes]:
        """What was left out (named), the usage chunk (when asked for) and `[DONE]`."""
        out = self.ignored()
        if self.wants_usage and self.usage is not None:
            chunk = self._base()
            chunk["choices"], chunk["usage"] = [], encode_usage(self.usage)
            out.append(data(chunk))
        out.append(b"data: [DONE]\n\n")
        return out

    def _base(self) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }

    def _chunk(self, choice: int, delta: dict, finish: str | None = None, logprobs=None) -> bytes:
        chunk = self._base()
        logprobs = {"content": logprobs, "refusal": None} if logprobs is not None else None
        chunk["choices"] = [
            {"index": choice, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        ]
        return data(chunk)

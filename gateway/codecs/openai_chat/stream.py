"""OpenAI chat stream chunks ⇄ the internal stream events."""

from __future__ import annotations

import time
import uuid

from gateway.codecs import events as ev
from gateway.codecs.openai_chat.reply import STOPS, encode_usage, finish_reason, usage_of
from gateway.codecs.sse import data, data_of, json_of


class Decoder:
    """Chat chunks (SSE events) in, internal events out. Parts are opened as their first
    delta comes and closed when another kind follows in the same choice, or at its end."""

    def __init__(self) -> None:
        self.started = False
        self.parts = 0  # parts opened so far (the next part's index)
        self.open: dict[int, tuple[str, int]] = {}  # choice → (kind, part index)
        self.calls: dict[tuple[int, int], int] = {}  # (choice, call index) → part index

    def feed(self, events: list[bytes]) -> list:
        out: list = []
        for event in events:
            if data_of(event) == b"[DONE]":
                out += self._close_all()
                out.append(ev.End())
                continue
            chunk = json_of(event)
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
        number = choice.get("index") if isinstance(choice.get("index"), int) else 0
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        thinking = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thinking, str) and thinking:
            index = self._part(out, number, "thinking")
            out.append(ev.ThinkingDelta(index, thinking, number))
        text = delta.get("content")
        if isinstance(text, str) and text:
            out.append(ev.TextDelta(self._part(out, number, "text"), text, number))
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            out.append(ev.RefusalDelta(self._part(out, number, "refusal"), refusal, number))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                out += self._call(number, call)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            out += self._close(number)
            out.append(ev.Stop(STOPS.get(reason, "end"), reason, number))
        return out

    def _call(self, number: int, call: dict) -> list:
        out: list = []
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        key = (number, call.get("index", 0))
        if key not in self.calls:
            out += self._close(number)
            index = self.calls[key] = self.parts
            self.parts += 1
            self.open[number] = ("tool_call", index)
            name = function.get("name")
            out.append(
                ev.PartStart(
                    index,
                    "tool_call",
                    number,
                    id=str(call.get("id") or "call_" + uuid.uuid4().hex[:24]),
                    name=name if isinstance(name, str) else "",
                )
            )
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(ev.ArgumentsDelta(self.calls[key], arguments, number))
        return out

    def _part(self, out: list, number: int, kind: str) -> int:
        """The open part of this kind in the choice (opened here if another is open)."""
        open_part = self.open.get(number)
        if open_part is not None and open_part[0] == kind:
            return open_part[1]
        out += self._close(number)
        index = self.parts
        self.parts += 1
        self.open[number] = (kind, index)
        out.append(ev.PartStart(index, kind, number))
        return index

    def _close(self, number: int) -> list:
        open_part = self.open.pop(number, None)
        return [ev.PartStop(open_part[1], number)] if open_part is not None else []

    def _close_all(self) -> list:
        out: list = []
        for number in list(self.open):
            out += self._close(number)
        return out


class Encoder:
    """Internal events in, chat chunks out (`wants_usage`: the usage chunk is sent)."""

    def __init__(self, model: str = "", wants_usage: bool = False) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.model = model
        self.created = int(time.time())
        self.wants_usage = wants_usage
        self.usage = None
        self.calls: dict[int, tuple[int, int]] = {}  # part index → (choice, call number)
        self.counts: dict[int, int] = {}  # choice → tool calls so far

    def feed(self, events: list) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            kind = type(event)
            if kind is ev.TextDelta:
                out.append(self._chunk(event.choice, {"content": event.text}))
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
                out.append(self._chunk(event.choice, {"tool_calls": [call]}))
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
        return out

    def end(self) -> list[bytes]:
        """The usage chunk (when asked for) and `[DONE]`."""
        out = []
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

    def _chunk(self, choice: int, delta: dict, finish: str | None = None) -> bytes:
        chunk = self._base()
        chunk["choices"] = [
            {"index": choice, "delta": delta, "logprobs": None, "finish_reason": finish}
        ]
        return data(chunk)

"""The Responses API's stream events (an upstream's) → the internal stream events.

Each output item (a message's content part, a function call, a reasoning item) is a part
of its own, numbered as it opens; the stream ends with the response's stop and usage."""

from __future__ import annotations

from gateway.codecs import events as ev
from gateway.codecs.openai_responses.reply import stop_of, thinking_of, usage_of
from gateway.codecs.sse import json_of

ENDS = ("response.completed", "response.incomplete")
THINKING = ("response.reasoning_text.delta", "response.reasoning_summary_text.delta")


class Decoder:
    """Responses events (SSE) in, internal events out."""

    def __init__(self) -> None:
        self.started = False
        self.count = 0  # parts opened so far
        self.parts: dict[tuple, int] = {}  # (output index[, content index]) → part index
        self.open: set[int] = set()
        self.argued: set[int] = set()  # calls whose arguments came as deltas
        self.called = False

    def feed(self, events: list[bytes]) -> list:
        out: list = []
        for event in events:
            payload = json_of(event)
            if payload is not None and isinstance(payload.get("type"), str):
                out += self._event(payload["type"], payload)
        return out

    def _event(self, kind: str, payload: dict) -> list:
        if kind == "response.created":
            return self._start(payload.get("response"))
        out: list = [] if self.started else self._start(None)
        where = payload.get("output_index")
        if kind == "response.output_item.added":
            out += self._item_added(payload.get("item"), where)
        elif kind == "response.content_part.added":
            part = payload.get("part") if isinstance(payload.get("part"), dict) else {}
            text = "refusal" if part.get("type") == "refusal" else "text"
            out += self._opened((where, payload.get("content_index")), text)[1]
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            index, opened = self._opened((where, payload.get("content_index")), "text")
            delta = _str(payload.get("delta"))
            if kind == "response.refusal.delta":
                out += [*opened, ev.RefusalDelta(index, delta)]
            else:
                logprobs = payload.get("logprobs")
                logprobs = logprobs if isinstance(logprobs, list) and logprobs else None
                out += [*opened, ev.TextDelta(index, delta, logprobs=logprobs)]
        elif kind == "response.output_text.annotation.added":
            index = self.parts.get((where, payload.get("content_index")))
            if index is not None and isinstance(payload.get("annotation"), dict):
                out.append(ev.Citation(index, payload["annotation"]))
        elif kind in THINKING:
            index, opened = self._opened((where,), "thinking")
            out += [*opened, ev.ThinkingDelta(index, _str(payload.get("delta")))]
        elif kind == "response.function_call_arguments.delta":
            index = self.parts.get((where,))
            if index is not None:
                self.argued.add(index)
                out.append(ev.ArgumentsDelta(index, _str(payload.get("delta"))))
        elif kind == "response.content_part.done":
            out += self._closed(self.parts.get((where, payload.get("content_index"))))
        elif kind == "response.output_item.done":
            out += self._item_done(payload.get("item"), where)
        elif kind in ENDS:
            out += self._end(payload.get("response"))
        elif kind in ("response.failed", "error"):
            out.append(_error(payload))
        return out

    def _start(self, response: object) -> list:
        self.started = True
        response = response if isinstance(response, dict) else {}
        return [ev.Start(_str(response.get("id")), _str(response.get("model")))]

    def _opened(self, key: tuple, kind: str, **fields) -> tuple[int, list]:
        """The part under `key` (opened now if it was not)."""
        if key in self.parts:
            return self.parts[key], []
        index = self.count
        self.count += 1
        self.parts[key] = index
        self.open.add(index)
        return index, [ev.PartStart(index, kind, **fields)]

    def _closed(self, index: int | None) -> list:
        if index is None or index not in self.open:
            return []
        self.open.discard(index)
        return [ev.PartStop(index)]

    def _item_added(self, item: object, where: object) -> list:
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return []  # a message's parts open with their own events, reasoning with its text
        self.called = True
        call_id = _str(item.get("call_id")) or _str(item.get("id"))
        return self._opened((where,), "tool_call", id=call_id, name=_str(item.get("name")))[1]

    def _item_done(self, item: object, where: object) -> list:
        """A call's arguments if none came as deltas; a reasoning item's encrypted content
        (only the finished item has it whole) as its signature."""
        if not isinstance(item, dict):
            return []
        out: list = []
        index = self.parts.get((where,))
        if item.get("type") == "function_call" and index is not None:
            if index not in self.argued and item.get("arguments"):
                out.append(ev.ArgumentsDelta(index, _str(item["arguments"])))
        elif item.get("type") == "reasoning":
            thinking = thinking_of(item)
            if thinking and index is None and thinking[0].redacted:
                index, opened = self._opened((where,), "thinking", redacted=thinking[0].redacted)
                out += opened
            elif thinking and index is None:
                index, opened = self._opened((where,), "thinking")
                out += [*opened, ev.ThinkingDelta(index, thinking[0].text)]
            if thinking and thinking[0].signature:
                out.append(ev.Signature(index, thinking[0].signature))
        return out + self._closed(index)

    def _end(self, response: object) -> list:
        response = response if isinstance(response, dict) else {}
        out: list = []
        for index in sorted(self.open):
            out.append(ev.PartStop(index))
        self.open.clear()
        out.append(ev.Stop(*stop_of(response, self.called)))
        usage = usage_of(response.get("usage"))
        if usage is not None:
            out.append(ev.UsageEvent(usage))
        return [*out, ev.End()]


def _error(payload: dict) -> ev.Error:
    """A failed response's (or an `error` event's) message."""
    response = payload.get("response") if isinstance(payload.get("response"), dict) else {}
    error = response.get("error") if isinstance(response.get("error"), dict) else payload
    message = _str(error.get("message")) or "the upstream's response failed"
    return ev.Error(message, _str(error.get("code")))


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""

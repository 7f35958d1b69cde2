"""Anthropic Messages stream events ⇄ the internal stream events."""

from __future__ import annotations

from gateway.codecs import events as ev
from gateway.codecs.anthropic.reply import STOPS, encode_usage, message_id, stop_reason, usage_of
from gateway.codecs.citations import as_anthropic
from gateway.codecs.reply import Usage
from gateway.codecs.sse import json_of, named
from gateway.codecs.stream import OneAnswer

KINDS = {"text": "text", "thinking": "thinking", "redacted_thinking": "thinking"}
_DELTA = "content_block_delta"


class Decoder:
    """Messages events in, internal events out; a block's index is its part's.
    `answer_tool`: the structured-output tool whose input is the answer's text."""

    def __init__(self, answer_tool: str | None = None) -> None:
        self.answer_tool = answer_tool
        self.answer: int | None = None  # the answer tool's block
        self.calls = 0
        self.skipped: set[int] = set()  # blocks no other format has (server tools…)
        self.start_usage: dict = {}

    def feed(self, events: list[bytes]) -> list:
        out: list = []
        for event in events:
            payload = json_of(event)
            if payload is not None:
                out += self.payload(payload)
        return out

    def payload(self, payload: dict) -> list:
        """The internal events of one Messages event (parsed)."""
        kind = payload.get("type")
        index = payload.get("index", 0)
        if kind == "content_block_delta":
            return self._delta(index, payload.get("delta"))
        if kind == "content_block_start":
            return self._block(index, payload.get("content_block"))
        if kind == "content_block_stop":
            return [] if index in self.skipped else [ev.PartStop(index)]
        if kind == "message_start":
            message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
            usage = message.get("usage")
            self.start_usage = usage if isinstance(usage, dict) else {}
            return [
                ev.Start(
                    str(message.get("id") or ""),
                    str(message.get("model") or ""),
                    usage_of(self.start_usage),
                )
            ]
        if kind == "message_delta":
            return self._end(payload)
        if kind == "message_stop":
            return [ev.End()]
        if kind == "error":
            error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
            return [ev.Error(str(error.get("message", "")), str(error.get("type", "")))]
        return []

    def _block(self, index: int, block: object) -> list:
        block = block if isinstance(block, dict) else {}
        kind = block.get("type")
        if kind == "tool_use" and self.answer_tool and block.get("name") == self.answer_tool:
            self.answer = index
            return [ev.PartStart(index, "text")]
        if kind == "tool_use":
            self.calls += 1
            return [
                ev.PartStart(
                    index, "tool_call", id=str(block.get("id", "")), name=str(block.get("name", ""))
                )
            ]
        if kind in KINDS:
            data = block.get("data") if kind == "redacted_thinking" else ""
            return [
                ev.PartStart(index, KINDS[kind], redacted=data if isinstance(data, str) else "")
            ]
        self.skipped.add(index)  # its deltas and stop are its own: only its kind goes on
        return [ev.Block(index, kind if isinstance(kind, str) else "content_block")]

    def _delta(self, index: int, delta: object) -> list:
        if index in self.skipped or not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            return [ev.TextDelta(index, str(delta.get("text", "")))]
        if kind == "thinking_delta":
            return [ev.ThinkingDelta(index, str(delta.get("thinking", "")))]
        if kind == "signature_delta":
            return [ev.Signature(index, str(delta.get("signature", "")))]
        if kind == "citations_delta" and isinstance(delta.get("citation"), dict):
            return [ev.Citation(index, delta["citation"])]
        if kind == "input_json_delta":
            piece = str(delta.get("partial_json", ""))
            if index == self.answer:
                return [ev.TextDelta(index, piece)]
            return [ev.ArgumentsDelta(index, piece)]
        return []

    def _end(self, payload: dict) -> list:
        delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
        raw = delta.get("stop_reason")
        stop = STOPS.get(raw, "end") if isinstance(raw, str) else None
        if stop == "tool_use" and self.answer is not None and not self.calls:
            stop = "end"
        out: list = [ev.Stop(stop, raw if isinstance(raw, str) else None)]
        given = payload.get("usage")
        if isinstance(given, dict):
            usage = usage_of(
                {**self.start_usage, **{k: v for k, v in given.items() if v is not None}}
            )
            if usage is not None:
                out.append(ev.UsageEvent(usage))
        return out


class Encoder(OneAnswer):
    """Internal events in, Messages events out (the first choice: Messages has one).
    `prompt_tokens`: the figure message_start shows when the provider gave none yet."""

    def __init__(self, model: str = "", prompt_tokens: int = 0) -> None:
        super().__init__()
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.index = -1  # the last block opened
        self.blocks: dict[int, int] = {}  # part index → block index
        self.open: int | None = None  # the open block's part
        self.called = False
        self.ended = False

    # The pieces streamed (most of a stream's events), each a delta of its part's block,
    # written out here rather than passed to `_delta`: a call less on every piece.
    def _text(self, event) -> list[bytes]:
        delta = {"type": "text_delta", "text": event.text}
        if event.index not in self.blocks:  # its part was never announced: `_delta` opens it
            return self._delta(event.index, delta)
        body = {"type": _DELTA, "index": self.blocks[event.index], "delta": delta}
        return [named(_DELTA, body)]

    _refusal = _text  # Messages has no refusal: it is the answer's text

    def _thinking(self, event: ev.ThinkingDelta) -> list[bytes]:
        delta = {"type": "thinking_delta", "thinking": event.text}
        if event.index not in self.blocks:
            return self._delta(event.index, delta)
        body = {"type": _DELTA, "index": self.blocks[event.index], "delta": delta}
        return [named(_DELTA, body)]

    def _arguments(self, event: ev.ArgumentsDelta) -> list[bytes]:
        delta = {"type": "input_json_delta", "partial_json": event.text}
        if event.index not in self.blocks:
            return self._delta(event.index, delta)
        body = {"type": _DELTA, "index": self.blocks[event.index], "delta": delta}
        return [named(_DELTA, body)]

    def _signature(self, event: ev.Signature) -> list[bytes]:
        return self._delta(event.index, {"type": "signature_delta", "signature": event.signature})

    def _part_stop(self, event: ev.PartStop) -> list[bytes]:
        return self._close(event.index)

    def _citation(self, event: ev.Citation) -> list[bytes]:
        out: list[bytes] = []
        cited, lost = as_anthropic([event.annotation], "")
        for citation in cited:
            out += self._delta(event.index, {"type": "citations_delta", "citation": citation})
        for kind in lost:
            self.leave_out(f"citations ({kind})")
        return out

    def _start(self, event: ev.Start) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        self.model = event.model or self.model
        usage = event.usage or Usage(self.prompt_tokens, 1)
        if event.usage is not None:
            self.usage = event.usage
        message = {
            "id": message_id(event.id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Clients read the prompt's tokens here (the provider's, else counted locally).
            "usage": {**encode_usage(usage), "output_tokens": max(1, usage.output)},
        }
        return [
            named("message_start", {"type": "message_start", "message": message}),
            named("ping", {"type": "ping"}),
        ]

    def _open(self, event: ev.PartStart) -> list[bytes]:
        out = self._close(self.open) if self.open is not None else []
        if event.kind == "tool_call":
            self.called = True
            block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
        elif event.kind == "thinking" and event.redacted:
            block = {"type": "redacted_thinking", "data": event.redacted}
        elif event.kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            block = {"type": "text", "text": ""}
        self.index += 1
        self.blocks[event.index] = self.index
        self.open = event.index
        start = {"type": "content_block_start", "index": self.index, "content_block": block}
        out.append(named("content_block_start", start))
        return out

    def _delta(self, part: int, delta: dict) -> list[bytes]:
        out: list[bytes] = []
        if part not in self.blocks:  # a delta whose part was never announced
            kinds = {"text_delta": "text", "thinking_delta": "thinking"}
            out += self._open(ev.PartStart(part, kinds.get(delta["type"], "text")))
        body = {"type": _DELTA, "index": self.blocks[part], "delta": delta}
        out.append(named(_DELTA, body))
        return out

    def _close(self, part: int | None) -> list[bytes]:
        if part is None or part != self.open:
            return []
        self.open = None
        stop = {"type": "content_block_stop", "index": self.blocks[part]}
        return [named("content_block_stop", stop)]

    def end(self) -> list[bytes]:
        """The last events: the open block closed, `message_delta`, `message_stop`."""
        if self.ended:
            return []
        self.ended = True
        out = [] if self.started else self._start(ev.Start())
        out += self._close(self.open)
        usage = encode_usage(self.usage or Usage(self.prompt_tokens, 0))
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.stop, self.called), "stop_sequence": None},
            "usage": usage,
        }
        out += self.ignored()
        out.append(named("message_delta", delta))
        out.append(named("message_stop", {"type": "message_stop"}))
        return out

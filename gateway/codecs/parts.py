"""Numbering a stream's parts for formats that send only deltas (OpenAI chat, Gemini): a
part opens with its first delta and closes when another kind follows in its choice, when
the choice stops, or at the stream's end."""

from __future__ import annotations

from gateway.codecs import events as ev

DELTAS = {"text": ev.TextDelta, "thinking": ev.ThinkingDelta, "refusal": ev.RefusalDelta}


class Parts:
    def __init__(self) -> None:
        self.count = 0  # parts opened so far (the next part's index)
        self.open: dict[int, tuple[str, int]] = {}  # choice → (kind, part index)
        self.calls: dict[tuple[int, object], int] = {}  # (choice, call key) → part index

    def delta(self, choice: int, kind: str, text: str, logprobs=None) -> list:
        """A piece of text, thinking or refusal (its part opened if need be; a text's log
        probabilities with it)."""
        out: list = []
        current = self.open.get(choice)
        if current is not None and current[0] == kind:
            index = current[1]
        else:
            index = self._open(out, choice, kind)
        if logprobs is not None:
            out.append(ev.TextDelta(index, text, choice, logprobs))
        else:
            out.append(DELTAS[kind](index, text, choice))
        return out

    def call(self, choice: int, key: object, call_id: str, name: str, arguments: str) -> list:
        """A tool call's start (first seen under `key`) or a piece of its arguments."""
        out: list = []
        if (choice, key) not in self.calls:
            index = self._open(out, choice, "tool_call", id=call_id, name=name)
            self.calls[(choice, key)] = index
        if arguments:
            out.append(ev.ArgumentsDelta(self.calls[(choice, key)], arguments, choice))
        return out

    def stop(self, choice: int, reason, raw: str | None) -> list:
        """The choice's end: its open part closed, then its stop."""
        return [*self.close(choice), ev.Stop(reason, raw, choice)]

    def close(self, choice: int) -> list:
        current = self.open.pop(choice, None)
        return [ev.PartStop(current[1], choice)] if current is not None else []

    def close_all(self) -> list:
        out: list = []
        for choice in list(self.open):
            out += self.close(choice)
        return out

    def _open(self, out: list, choice: int, kind: str, **fields) -> int:
        out += self.close(choice)
        index = self.count
        self.count += 1
        self.open[choice] = (kind, index)
        out.append(ev.PartStart(index, kind, choice, **fields))
        return index

"""What the stream encoders share: naming what of a stream its client's format cannot show,
and, for the formats of one answer (Messages, the Responses API), the handling of the
events around an answer's parts (its start, stop, usage and end).

A whole answer names what it left out in its `x-keyrelay-ignored` header; a stream's
headers leave before its answer, so a stream names it in an SSE comment line before its
last events: `: x-keyrelay-ignored: server_tool_use, citations (char_location)`. SSE
clients skip comment lines (the official SDKs among them), so the stream stays valid.
"""

from __future__ import annotations

from gateway.codecs import events as ev

COMMENT = b": x-keyrelay-ignored: "


class Naming:
    """Keeps the names of what a stream left out, in the words of the whole answer's
    header (`server_tool_use`, `citations (char_location)`), each once."""

    def __init__(self) -> None:
        self.left_out: dict[str, None] = {}  # an ordered set: first seen, first named

    def leave_out(self, name: str) -> None:
        self.left_out[name] = None

    def ignored(self) -> list[bytes]:
        """The comment naming what was left out; nothing when nothing was."""
        if not self.left_out:
            return []
        names = ", ".join(self.left_out)
        # A name is an upstream's word: a line break in it would end the comment early.
        names = names.replace("\r", " ").replace("\n", " ")
        return [COMMENT + names.encode() + b"\n\n"]


class OneAnswer(Naming):
    """An encoder of a format with one answer: `feed` starts the answer, hands the first
    choice's part events to the subclass's handlers (`_text`, `_thinking`, `_refusal`,
    `_arguments`, `_signature`, `_open`, `_part_stop`, `_citation`), keeps the stop and
    usage, names the blocks it cannot show, and ends the answer with the subclass's `end`.
    An `if` chain, most frequent events first, rather than a table of handlers: it is the
    cheapest dispatch on the hot path (one comparison and one call per text piece)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = False
        self.stop: str | None = None
        self.usage = None

    def feed(self, events: list) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            kind = type(event)
            if kind is ev.Start:
                out += self._start(event)
                continue
            if getattr(event, "choice", 0) != 0:
                continue  # one answer: the first
            if not self.started and kind is not ev.UsageEvent:
                out += self._start(ev.Start())
            if kind is ev.TextDelta:
                out += self._text(event)
            elif kind is ev.ThinkingDelta:
                out += self._thinking(event)
            elif kind is ev.ArgumentsDelta:
                out += self._arguments(event)
            elif kind is ev.RefusalDelta:
                out += self._refusal(event)
            elif kind is ev.Signature:
                out += self._signature(event)
            elif kind is ev.PartStart:
                out += self._open(event)
            elif kind is ev.PartStop:
                out += self._part_stop(event)
            elif kind is ev.Citation:
                out += self._citation(event)
            elif kind is ev.Stop:
                self.stop = event.reason
            elif kind is ev.UsageEvent:
                self.usage = event.usage
            elif kind is ev.End:
                out += self.end()
            elif kind is ev.Block:
                self.leave_out(event.kind)
        return out

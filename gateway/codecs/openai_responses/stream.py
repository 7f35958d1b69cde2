"""The internal stream events → the Responses API's stream events (each numbered)."""

from __future__ import annotations

from gateway.codecs import events as ev
from gateway.codecs.citations import as_responses
from gateway.codecs.openai_responses.reply import (
    call_item,
    message_item,
    reasoning_item,
    text_content,
)
from gateway.codecs.reply import Usage
from gateway.codecs.sse import named
from gateway.codecs.stream import OneAnswer

_KINDS = {ev.TextDelta: "text", ev.ThinkingDelta: "thinking", ev.RefusalDelta: "refusal"}


class Encoder(OneAnswer):
    """Internal events in, Responses events out. The `response` objects around them are
    the dialect's (`dialect.response_object`, which echoes the request); the finished
    response is kept (`dialect.keep`). `sequence`, `model` and `items` tell a broken
    stream's end where the stream stood."""

    def __init__(self, dialect, request) -> None:
        super().__init__()
        self.dialect, self.request = dialect, request
        self.sequence = 0
        self.ended = False
        self.items: list[dict] = []  # output items, in order
        self.parts: dict[int, int] = {}  # part index → output index
        self.open: set[int] = set()  # parts started and not stopped
        self.citations: dict[int, list[dict]] = {}  # part index → its citations so far
        self.model: str | None = None

    def _event(self, kind: str, body: dict) -> bytes:
        body = {"type": kind, "sequence_number": self.sequence, **body}
        self.sequence += 1
        return named(kind, body)

    def _signature(self, event: ev.Signature) -> list[bytes]:
        out: list[bytes] = []
        index = self._index(event.index, "thinking", out)
        item = self.items[index]
        item["encrypted_content"] = (item["encrypted_content"] or "") + event.signature
        return out

    def _part_stop(self, event: ev.PartStop) -> list[bytes]:
        return self._close(event.index)

    def _citation(self, event: ev.Citation) -> list[bytes]:
        # announced with its text's end: it may cite it whole
        self.citations.setdefault(event.index, []).append(event.annotation)
        return []

    def _start(self, event: ev.Start) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        self.model = event.model or self.request.model
        if event.usage is not None:
            self.usage = event.usage
        response = self.dialect.response_object(self.request, "in_progress", [], 0, 0, self.model)
        del response["usage"]  # not known yet: absent (the document has no null for it)
        return [
            self._event("response.created", {"response": response}),
            self._event("response.in_progress", {"response": response}),
        ]

    def _open(self, event: ev.PartStart) -> list[bytes]:
        if event.kind == "tool_call":
            item = call_item(event.id, event.name, "", "in_progress")
        elif event.kind == "thinking":
            item = reasoning_item("", event.redacted, "in_progress")
        elif event.kind == "refusal":
            item = message_item([{"type": "refusal", "refusal": ""}], "in_progress")
        else:
            item = message_item([text_content("")], "in_progress")
        self.items.append(item)
        index = self.parts[event.index] = len(self.items) - 1
        self.open.add(event.index)
        added = {**item, "content": []} if "content" in item else dict(item)
        out = [self._event("response.output_item.added", {"output_index": index, "item": added})]
        if item["type"] == "message":
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            part = dict(item["content"][0])
            out.append(self._event("response.content_part.added", {**where, "part": part}))
        return out

    def _index(self, part: int, kind: str, out: list[bytes]) -> int:
        """The output index of a part (opened here if its start was never announced)."""
        if part not in self.parts:
            out += self._open(ev.PartStart(part, kind))
        return self.parts[part]

    def _text(self, event) -> list[bytes]:
        out: list[bytes] = []
        index = self._index(event.index, _KINDS[type(event)], out)
        item = self.items[index]
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        if item["type"] == "reasoning":
            if not item["content"]:
                item["content"].append({"type": "reasoning_text", "text": ""})
            item["content"][0]["text"] += event.text
            out.append(self._event("response.reasoning_text.delta", {**where, "delta": event.text}))
        elif item["content"][0]["type"] == "refusal":
            item["content"][0]["refusal"] += event.text
            out.append(self._event("response.refusal.delta", {**where, "delta": event.text}))
        else:
            item["content"][0]["text"] += event.text
            body = {**where, "delta": event.text, "logprobs": []}
            out.append(self._event("response.output_text.delta", body))
        return out

    _thinking = _refusal = _text

    def _arguments(self, event: ev.ArgumentsDelta) -> list[bytes]:
        out: list[bytes] = []
        index = self._index(event.index, "tool_call", out)
        item = self.items[index]
        item["arguments"] += event.text
        body = {"item_id": item["id"], "output_index": index, "delta": event.text}
        out.append(self._event("response.function_call_arguments.delta", body))
        return out

    def _close(self, part: int) -> list[bytes]:
        if part not in self.open:
            return []
        self.open.discard(part)
        index = self.parts[part]
        item = self.items[index]
        item["status"] = "completed"
        where = {"item_id": item["id"], "output_index": index}
        out = []
        if item["type"] == "message":
            content = item["content"][0]
            where["content_index"] = 0
            if content["type"] == "refusal":
                done = {**where, "refusal": content["refusal"]}
                out.append(self._event("response.refusal.done", done))
            else:
                out += self._annotations(part, where, content)
                done = {**where, "text": content["text"], "logprobs": []}
                out.append(self._event("response.output_text.done", done))
            out.append(self._event("response.content_part.done", {**where, "part": content}))
        elif item["type"] == "reasoning" and item["content"]:
            done = {**where, "content_index": 0, "text": item["content"][0]["text"]}
            out.append(self._event("response.reasoning_text.done", done))
        elif item["type"] == "function_call":
            done = {**where, "name": item["name"], "arguments": item["arguments"]}
            out.append(self._event("response.function_call_arguments.done", done))
        out.append(self._event("response.output_item.done", {"output_index": index, "item": item}))
        return out

    def _annotations(self, part: int, where: dict, content: dict) -> list[bytes]:
        """A text's citations as its annotations, each announced."""
        given = self.citations.pop(part, None)
        if not given:
            return []
        content["annotations"], lost = as_responses(given, content["text"])
        for kind in lost:
            self.leave_out(f"citations ({kind})")
        return [
            self._event(
                "response.output_text.annotation.added",
                {**where, "annotation_index": number, "annotation": annotation},
            )
            for number, annotation in enumerate(content["annotations"])
        ]

    def end(self) -> list[bytes]:
        """Every open item closed, then `response.completed` (or `.incomplete`)."""
        if self.ended:
            return []
        self.ended = True
        out = [] if self.started else self._start(ev.Start())
        for part in sorted(self.open, key=self.parts.__getitem__):
            out += self._close(part)
        for given in self.citations.values():  # of parts with no text to carry them
            for annotation in given:
                self.leave_out(f"citations ({annotation.get('type')})")
        # No usage from the provider: the prompt counted here (the answer is booked apart).
        usage = self.usage or Usage(self.request.count_prompt(), 0)
        status = "incomplete" if self.stop == "length" else "completed"
        response = self.dialect.response_object(
            self.request,
            status,
            self.items,
            usage.input,
            usage.output,
            self.model,
            cached=usage.cache_read,
            cache_write=usage.cache_write,
            reasoning=usage.reasoning,
        )
        self.dialect.keep(self.request, self.items, response)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        out += self.ignored()
        out.append(self._event(kind, {"response": response}))
        return out

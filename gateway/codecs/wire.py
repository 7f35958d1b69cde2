"""Which codec reads which wire format: a reply or stream that reaches a dialect in another
format than its own is decoded here, once, into the internal language."""

from __future__ import annotations

import msgspec
import orjson

from gateway.codecs import events as ev
from gateway.codecs.anthropic import reply as anthropic_reply
from gateway.codecs.anthropic import stream as anthropic_stream
from gateway.codecs.citations import as_anthropic, as_chat, as_responses
from gateway.codecs.openai_chat import reply as chat_reply
from gateway.codecs.openai_chat import stream as chat_stream
from gateway.codecs.openai_responses import reply as responses_reply
from gateway.codecs.openai_responses import stream_in as responses_stream
from gateway.codecs.reply import Block, Reply, Text, Thinking
from gateway.codecs.usage import booked, of_booked

# An UpstreamReply whose answer is the internal `Reply` (`reply.reply`) and whose stream
# reader yields internal events: what adapters of another format than the client's give.
INTERNAL = "internal"

_REPLY_DECODERS = {
    "openai": chat_reply.decode,
    "anthropic": anthropic_reply.decode,
    "openai_responses": responses_reply.decode,
}
_STREAM_DECODERS = {
    "openai": chat_stream.Decoder,
    "anthropic": anthropic_stream.Decoder,
    "openai_responses": responses_stream.Decoder,
}


def reply_of(upstream) -> Reply:
    """An UpstreamReply's 2xx answer as the internal reply (decoded from its body when its
    adapter gave it in a wire format); the booked usage when the answer reports none."""
    internal = upstream.reply
    if internal is None:
        try:
            parsed = orjson.loads(upstream.body)
        except orjson.JSONDecodeError:
            parsed = None
        internal = _REPLY_DECODERS[upstream.format](parsed if isinstance(parsed, dict) else {})
    if internal.usage is None and upstream.usage is not None:
        internal.usage = of_booked(upstream.usage)
    return internal


class Translated:
    """A stream in a wire format rendered in another: decoded to internal events, then
    encoded. Everything else (a broken stream's progress) is the encoder's."""

    def __init__(self, decoder, encoder) -> None:
        self.decoder, self.encoder = decoder, encoder

    def feed(self, events: list[bytes]) -> list[bytes]:
        return self.encoder.feed(self.decoder.feed(events))

    def __getattr__(self, name: str):
        return getattr(self.encoder, name)


def translator(encoder, source: str):
    """What renders a stream of the `source` format through a dialect's event encoder."""
    if source == INTERNAL:
        return encoder
    return Translated(_STREAM_DECODERS[source](), encoder)


class Encoded:
    """A stream reader yielding internal events, made one yielding a wire format's events
    (`encoder`); the rest is the reader's (usage, text, its end)."""

    def __init__(self, reader, encoder) -> None:
        self.reader, self.encoder = reader, encoder

    @property
    def done(self) -> bool:
        return self.reader.done

    def feed(self, data: bytes) -> list[bytes]:
        events = self.reader.feed(data)
        return self.encoder.feed(events) if events else []

    def __getattr__(self, name: str):
        return getattr(self.reader, name)


def decoded(upstream, client_format: str):
    """A 2xx chat UpstreamReply in a wire format the client does not speak, decoded once into
    the internal reply or events (its `body` keeps the upstream's bytes; its stream reader
    still reads usage and text from them). One in the client's own format is left as it is
    (passthrough), and so is an error (each dialect renders its message)."""
    source = upstream.format
    if source == client_format or upstream.status >= 300 or source not in _REPLY_DECODERS:
        return upstream
    if upstream.stream is not None:
        upstream.stream = Encoded(upstream.stream, _STREAM_DECODERS[source]())
    else:
        upstream.reply = reply_of(upstream)
    upstream.format = INTERNAL
    return upstream


_CITATIONS = {
    "openai": lambda annotations, text: as_chat(annotations, text, 0),
    "anthropic": as_anthropic,
    "openai_responses": as_responses,
}


def unrendered(internal: Reply, client_format: str) -> list[str]:
    """What of an answer the client's format has no twin for, by name (for
    `x-keyrelay-ignored`): a block only its provider's format has, a redacted thinking
    block (chat has no encrypted reasoning), a kind of citation."""
    lost: list[str] = []
    convert = _CITATIONS.get(client_format)
    for choice in internal.choices:
        for part in choice.parts:
            kind = type(part)
            if kind is Block and client_format != "anthropic":
                lost.append(part.kind)
            elif kind is Thinking and part.redacted and client_format == "openai":
                lost.append("redacted_thinking")
            elif kind is Text and part.annotations and convert is not None:
                lost += [f"citations ({name})" for name in convert(part.annotations, part.text)[1]]
    return list(dict.fromkeys(lost))


def scrubbed(internal: Reply, scrub) -> Reply:
    """The internal reply without the secret (`scrub`: bytes → bytes)."""
    raw = msgspec.json.encode(internal)
    clean = scrub(raw)
    return internal if clean == raw else msgspec.json.decode(clean, type=Reply)


# -- a stream made of internal events (an adapter with no wire format of its own: a CLI) --

_EVENT_ENCODER = msgspec.json.Encoder()
_EVENT_DECODER = msgspec.json.Decoder(ev.Event)


def framed(events: list) -> bytes:
    """Internal events as the bytes of a stream (one `data:` line each): what an adapter
    whose upstream has no wire format hands on, so the secret scrubber reads them as any
    stream's bytes and `InternalStream` reads them back."""
    return b"".join(b"data: " + _EVENT_ENCODER.encode(event) + b"\n\n" for event in events)


class InternalStream:
    """Reads a `framed` stream: its internal events, its usage (cache writes too), its text
    and everything billed, and its end."""

    def __init__(self) -> None:
        self.done = False
        self.usage = None
        self._buffer = b""
        self._text: list[str] = []
        self._billed: list[str] = []  # the text, thinking and tool calls, in order

    def feed(self, data: bytes) -> list:
        self._buffer += data
        out: list = []
        while (end := self._buffer.find(b"\n\n")) != -1:
            line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            try:
                event = _EVENT_DECODER.decode(line[5:])
            except msgspec.DecodeError:
                continue  # not an event of ours: nothing to relay
            kind = type(event)
            if kind is ev.TextDelta:
                self._text.append(event.text)
                self._billed.append(event.text)
            elif kind is ev.ThinkingDelta or kind is ev.ArgumentsDelta:
                self._billed.append(event.text)
            elif kind is ev.PartStart and event.name:
                self._billed.append(event.name)
            elif kind is ev.UsageEvent:
                self.usage = booked(event.usage)
            elif kind is ev.End:
                self.done = True
            out.append(event)
        return out

    def read_usage(self):
        return self.usage

    def completion_text(self) -> str:
        return "".join(self._text)

    def billable_text(self) -> str:
        return "".join(self._billed)

"""Which codec reads which wire format: a reply or stream that reaches a dialect in another
format than its own is decoded here, once, into the internal language."""

from __future__ import annotations

import msgspec
import orjson

from gateway.codecs.anthropic import reply as anthropic_reply
from gateway.codecs.anthropic import stream as anthropic_stream
from gateway.codecs.openai_chat import reply as chat_reply
from gateway.codecs.openai_chat import stream as chat_stream
from gateway.codecs.reply import Reply
from gateway.codecs.usage import of_booked

# An UpstreamReply whose answer is the internal `Reply` (`reply.reply`) and whose stream
# reader yields internal events: what adapters of another format than the client's give.
INTERNAL = "internal"

_REPLY_DECODERS = {"openai": chat_reply.decode, "anthropic": anthropic_reply.decode}
_STREAM_DECODERS = {"openai": chat_stream.Decoder, "anthropic": anthropic_stream.Decoder}


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


def scrubbed(internal: Reply, scrub) -> Reply:
    """The internal reply without the secret (`scrub`: bytes → bytes)."""
    raw = msgspec.json.encode(internal)
    clean = scrub(raw)
    return internal if clean == raw else msgspec.json.decode(clean, type=Reply)

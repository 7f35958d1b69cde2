"""Keeping a provider key's secret out of what its upstream says.

An upstream may echo the credential it received (OpenAI's 401 names the key; others echo
every header, or the URL). Whatever an upstream sends is scrubbed of the key's secret, in
every form it takes on the wire, before it is relayed, logged, stored or shown: the secret
itself (`Bearer …`, `x-api-key`, `x-goog-api-key`), URL-encoded (`key=…` in a URL), escaped
by a JSON encoder, and the base64 of `email:secret` (HTTP Basic, RovoDev).

Scrubbing is a few `find`/`replace` calls per body or chunk (no regex): it runs on every
answer. A stream keeps back only the end of a chunk that could start a secret cut by the
chunk's boundary, so events are not delayed.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

from gateway.codecs.wire import scrubbed

MASK = "***"
_MASK_BYTES = MASK.encode()
# A "secret" shorter than this is no real key, and replacing it would mangle answers.
MIN_SECRET = 6
# The start of a form left at the end of a cut text (an error truncated by its adapter)
# is masked from this many characters on.
MIN_PARTIAL = 4


def wire_forms(secret: str, email: str = "") -> list[str]:
    """Every form the secret takes in a request or an echo of one, longest first."""
    if len(secret) < MIN_SECRET:
        return []
    forms = {
        secret,
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        secret.replace("/", "\\/"),  # a JSON encoder that escapes slashes
    }
    if email:
        pair = base64.b64encode(f"{email}:{secret}".encode()).decode()
        forms.update((pair, pair.rstrip("=")))  # with or without its padding
    return sorted(forms, key=len, reverse=True)


class Scrubber:
    """Replaces every wire form of one secret with `***` in text, bytes and streams."""

    __slots__ = ("forms", "_bytes", "_chars", "_byte_values")

    def __init__(self, forms: list[str]) -> None:
        self.forms = tuple(forms)
        self._bytes = tuple(form.encode() for form in forms)
        # What a form's start can end with: a chunk ending otherwise (an SSE event's
        # blank line) holds nothing back, at the cost of one set lookup.
        self._chars = frozenset("".join(forms))
        self._byte_values = frozenset(b"".join(self._bytes))

    def data(self, data: bytes) -> bytes:
        """The bytes without the secret."""
        for form in self._bytes:
            if form in data:
                data = data.replace(form, _MASK_BYTES)
        return data

    def text(self, text: str | None) -> str | None:
        """The text without the secret, nor the start of one it ends with (a cut text)."""
        if not text or not self.forms:
            return text
        for form in self.forms:
            if form in text:
                text = text.replace(form, MASK)
        cut = _held(text, self.forms) if text[-1] in self._chars else 0
        if cut >= MIN_PARTIAL:
            text = text[:-cut] + MASK
        return text

    def chunks(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """A stream's chunks without the secret, even when one is split across chunks:
        only a chunk's end that could be the start of a form waits for the next."""
        if not self._bytes:
            yield from chunks
            return
        held = b""
        try:
            for chunk in chunks:
                data = self.data(held + chunk) if held else self.data(chunk)
                keep = _held(data, self._bytes) if data and data[-1] in self._byte_values else 0
                if keep:
                    data, held = data[:-keep], data[-keep:]
                else:
                    held = b""
                if data:
                    yield data
            if held:
                yield held  # the stream ended: no secret can follow
        except Exception as exc:
            if hasattr(exc, "outcome"):  # a TransportError: its message may quote the stream
                raise self.error(exc) from None
            raise
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def error(self, exc: BaseException) -> BaseException:
        """A TransportError (or like) whose message is scrubbed; the same one if clean."""
        message = str(exc)
        clean = self.text(message)
        if clean == message:
            return exc
        return type(exc)(exc.outcome, clean)

    def reply(self, reply):
        """An UpstreamReply scrubbed in place (body, error, text, model, stream)."""
        if not self.forms:
            return reply
        body = reply.body
        reply.body = self.data(body)
        # A decoded answer: scrubbed when the bytes it came from held the secret (or when
        # there were none, as from a CLI).
        if reply.reply is not None and (reply.body is not body or not body):
            reply.reply = scrubbed(reply.reply, self.data)
        reply.error = self.text(reply.error)
        reply.text = self.text(reply.text)
        reply.model = self.text(reply.model)
        if reply.chunks is not None:
            reply.chunks = self.chunks(reply.chunks)
        return reply


def _held(data, forms) -> int:
    """How many of the last characters of `data` are the start of a form (0: none)."""
    size = len(data)
    held = 0
    for form in forms:
        start = max(0, size - len(form) + 1)
        first = form[:1]
        at = data.find(first, start)
        while at != -1 and size - at > held:
            if form.startswith(data[at:]):
                held = size - at  # the earliest start is the longest
                break
            at = data.find(first, at + 1)
    return held


@functools.lru_cache(maxsize=4096)
def scrubber(secret: str, email: str = "") -> Scrubber:
    """The scrubber of a secret (memoised: built once per key, not per request)."""
    return Scrubber(wire_forms(secret, email))

"""Relay: the serving attempt's answer to the client, in the client's dialect. A whole
answer is booked before it goes; a stream is relayed event by event and booked exactly
once, before its last event, whatever ends it (the upstream, a cut, the client leaving)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

from gateway import tokens
from gateway.codecs.wire import translator, unrendered
from gateway.dialects.base import Dialect, ProxyRequest
from gateway.errors import journal_full
from gateway.ledger.accounting import RequestRecord
from gateway.ledger.journal import JournalFull
from gateway.ledger.usage import Usage
from gateway.policy import Outcome
from gateway.providers import PRICE_PROVIDERS
from gateway.providers.base import TransportError, UpstreamReply
from gateway.proxy.admission import Ticket
from gateway.proxy.booking import Booking
from gateway.proxy.cut import AnswerMeter, length_stop
from gateway.store import KeyRow
from models.types import usd

# The request's cost in USD: booked, or for a stream estimated (`-estimated: true`).
COST_HEADER = "x-keyrelay-cost"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


@dataclass
class ProxyResponse:
    """What goes back to the client: status, headers, and a body or a chunk iterator."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: Iterator[bytes] | None = None


@dataclass
class Served:
    """One request on its way back: what was asked, in which dialect, and its books."""

    request: ProxyRequest
    dialect: Dialect
    rec: RequestRecord
    ticket: Ticket
    started: float
    strategy: str | None = None  # the profile's key selection

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


IGNORED_HEADER = "x-keyrelay-ignored"


def trace_headers(rec: RequestRecord, ticket: Ticket | None) -> dict[str, str]:
    headers = {
        "x-keyrelay-request-id": rec.request_id,
        "x-keyrelay-attempts": str(len(rec.attempts)),
        # Which provider answered (or failed last); `none` when no upstream was asked.
        "x-keyrelay-provider": rec.provider or "none",
    }
    if rec.context_pruned:  # the conversation the model saw is shorter than the client's
        headers["x-keyrelay-context-pruned"] = str(rec.context_pruned)
    if ticket is not None and ticket.headers:
        headers.update(ticket.headers)
    if rec.recorded:  # booked: what it cost (a stream's headers go before: see `respond`)
        headers[COST_HEADER] = usd(rec.cost_micros)
    return headers


def ignored_header(served: Served, reply: UpstreamReply) -> dict[str, str]:
    """`x-keyrelay-ignored`: what of the client's request a translating upstream went
    without (built-in Responses tools), when the upstream did not get the body as it is,
    and what of a translated answer the client's format has no twin for."""
    if reply.format == served.dialect.format:
        return {}
    names = [served.request.extra.get("ignored") or ""]
    if reply.reply is not None and reply.status < 300:
        names += unrendered(reply.reply, served.dialect.format)
    ignored = ", ".join(name for name in names if name)
    return {IGNORED_HEADER: ignored} if ignored else {}


class Relay:
    def __init__(self, booking: Booking) -> None:
        self.booking = booking

    def respond(self, served: Served, key: KeyRow, reply: UpstreamReply) -> ProxyResponse:
        rec = served.rec
        rec.provider, rec.provider_key_id, rec.status_code = (
            key.provider,
            key.id or None,
            reply.status,
        )
        if reply.status >= 300 or reply.stream is None:
            if reply.status < 300:
                rec.usage = reply.usage or estimate(served.request, reply.text)
            else:
                rec.error = reply.error
            body = served.dialect.render(reply, served.request)
            rec.latency_ms = served.elapsed_ms()
            self._book_answer(served, key, strict=reply.status < 300)
            headers = trace_headers(rec, served.ticket)  # after booking: with its cost
            headers.update(ignored_header(served, reply))
            return ProxyResponse(
                reply.status, {"Content-Type": "application/json", **headers}, body
            )
        headers = trace_headers(rec, served.ticket)
        headers.update(ignored_header(served, reply))
        headers[COST_HEADER] = usd(self._stream_estimate(served, key))
        headers[COST_HEADER + "-estimated"] = "true"
        rec.ttft_ms = served.elapsed_ms()
        relay = StreamRelay(self.booking, served, key, reply)
        return ProxyResponse(200, {**headers, **SSE_HEADERS}, chunks=Relayed(relay))

    def _book_answer(self, served: Served, key: KeyRow, strict: bool) -> None:
        """Book a whole answer before it goes; one the journal cannot take is withheld and
        answered 503 (an answer is never given without a record that outlives a crash)."""
        rec = served.rec
        try:
            self.booking.book(rec, served.ticket, key, strict=strict)
        except JournalFull:
            refused = journal_full()
            rec.status_code, rec.error = refused.status, refused.message
            self.booking.book(rec, served.ticket, key)
            raise refused from None

    def _stream_estimate(self, served: Served, key: KeyRow) -> int:
        """A stream's cost as known when its headers go, before its usage comes: what its
        budget reservation holds, else its prompt's (estimated from its length)."""
        reservation = served.ticket.reservation
        if reservation is not None:
            return reservation[2]
        prompt = served.request.quick_prompt_estimate()
        priced_as = PRICE_PROVIDERS.get(key.provider, key.provider)
        return self.booking.prices.cost_micros(priced_as, served.rec.model, Usage(prompt, 0))


class Relayed:
    """The stream's chunks for the WSGI server, whose `close()` books the request even
    when the client went away before the first chunk was asked for (a generator that
    never started runs no `finally`)."""

    def __init__(self, relay: StreamRelay) -> None:
        self.relay = relay
        self.chunks = relay.run()

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        self.chunks.close()
        self.relay.abandon()


class StreamRelay:
    """Relays an upstream stream to the client and books it exactly once, however it ends."""

    def __init__(self, booking: Booking, served: Served, key: KeyRow, reply: UpstreamReply):
        self.booking, self.served, self.key, self.reply = booking, served, key, reply
        self.reader = reply.stream
        dialect = served.dialect
        translate = reply.format != dialect.format  # same format: relayed as it is
        self.translator = (
            translator(dialect.stream_translator(served.request), reply.format)
            if translate
            else None
        )

    def run(self) -> Iterator[bytes]:
        """Yield events as they arrive; book the request before the final event goes out."""
        try:
            yield from self._relay()
        except TransportError as exc:
            self._finish(502, f"upstream stream broke: {exc}")
            yield from self._ignored()  # what the answer so far left out, named before its end
            yield self.served.dialect.stream_error(
                "The upstream stream broke before it finished; the tokens sent so far were "
                "counted. Retry the request.",
                "upstream_stream_broken",
                self.served.request,
                self.translator or self.reader,
            )
        finally:
            self.reply.close()
            # Only a client that went away leaves the books unwritten by now.
            self._finish(499, "client disconnected before the stream finished")

    def _ignored(self) -> list[bytes]:
        """The comment naming what a translated stream left out (gateway/codecs/stream.py)."""
        ignored = getattr(self.translator, "ignored", None)
        return ignored() if ignored is not None else []

    def _relay(self) -> Iterator[bytes]:
        reader, translator = self.reader, self.translator
        cap = self.served.ticket.answer_cap
        if cap is not None:
            yield from self._relay_metered(AnswerMeter(cap))
            return
        for chunk in itertools.chain((self.reply.first_chunk,), self.reply.chunks):
            events = reader.feed(chunk)
            if translator is not None and events:
                events = translator.feed(events)
            if reader.done:
                # Book the request before its end leaves: an answer the client got is counted.
                self._finish(200, None)
                yield b"".join(events)
                self._drain()
                return
            if events:
                yield b"".join(events)
        self._ended()

    def _relay_metered(self, meter: AnswerMeter) -> Iterator[bytes]:
        """`_relay` for an answer its budget reservation caps: read event by event, so the
        stream is cut at the first event past the cap, not a whole network read later."""
        reader, translator = self.reader, self.translator
        for chunk in itertools.chain((self.reply.first_chunk,), self.reply.chunks):
            out: list[bytes] = []
            for piece in _event_pieces(chunk):
                events = reader.feed(piece)
                if translator is not None and events:
                    events = translator.feed(events)
                out += events
                if reader.done:
                    self._finish(200, None)
                    yield b"".join(out)
                    self._drain()
                    return
                if meter.passed(piece, reader):
                    yield b"".join(out) + self._cut()
                    return
            if out:
                yield b"".join(out)
        self._ended()

    def _ended(self) -> None:
        """The upstream closed the stream: complete if its usage came, else broken."""
        if self.reader.read_usage() is None:
            raise TransportError(Outcome.CONNECTION_ERROR, "stream ended without its end event")
        self._finish(200, None)

    def _cut(self) -> bytes:
        """End the stream at the answer its budget reservation pays for: booked as it
        stands, the upstream let go, the client told its answer reached the length."""
        served = self.served
        counted = estimate(served.request, self.reader.billable_text())
        reported = self.reader.read_usage()  # a partial count, if any: the larger is booked
        if reported is not None and reported.output_tokens >= counted.output_tokens:
            counted = reported
        elif reported is not None:
            counted = Usage(reported.input_tokens, counted.output_tokens, True)
        self._finish(200, None, counted)
        self.reply.close()
        usage = served.rec.usage
        return length_stop(served.dialect, served.request, self.translator, self.reader, usage)

    def abandon(self) -> None:
        """The client is gone: free the upstream and book what happened (once)."""
        if not self.served.rec.recorded:
            self.reply.close()
            self._finish(499, "client disconnected before the stream finished")

    def _drain(self) -> None:
        """Read the upstream to its end so its connection can be reused."""
        try:
            for _ in self.reply.chunks:
                pass
        except TransportError:
            pass

    def _finish(self, status: int, error: str | None, usage: Usage | None = None) -> None:
        served = self.served
        rec = served.rec
        if rec.recorded:
            return
        rec.status_code, rec.error = status, error
        rec.usage = (
            usage
            or self.reader.read_usage()
            or estimate(served.request, self.reader.billable_text())
        )
        rec.latency_ms = served.elapsed_ms()
        self.booking.book(rec, served.ticket, self.key)


def _event_pieces(chunk: bytes) -> list[bytes]:
    """A network read split after each SSE event's blank line (the reader joins pieces)."""
    pieces = chunk.split(b"\n\n")
    out = [piece + b"\n\n" for piece in pieces[:-1]]
    if pieces[-1]:
        out.append(pieces[-1])
    return out


def estimate(request: ProxyRequest, answer: str) -> Usage:
    """The usage of an answer the upstream did not count: both sides counted locally."""
    return Usage(request.count_prompt(), tokens.count_text(answer), True)

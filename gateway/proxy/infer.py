"""Infer: one upstream call for a request with one provider key, in the operation it asks
for (a chat answer, whole or streamed; a legacy completion; embeddings). What comes back
never carries the key's secret, and a stream's first bytes are read here, since they
decide whether the attempt answered."""

from __future__ import annotations

from gateway.codecs.wire import decoded
from gateway.dialects.base import ProxyRequest
from gateway.policy import Outcome
from gateway.providers.base import ProviderAdapter, Timeouts, TransportError, UpstreamReply
from gateway.providers.carry import ALL_CARRIED, Unsupported, refused
from gateway.providers.transport import Target


def infer(
    adapter: ProviderAdapter,
    target: Target,
    request: ProxyRequest,
    body: dict,
    timeouts: Timeouts,
) -> UpstreamReply:
    """Ask the key's upstream for the request (`body`: the hop's); its reply, scrubbed.
    A failed call raises TransportError (scrubbed too)."""
    unresolved = request.extra.get("unresolved")
    if unresolved is not None and not adapter.passes_through(target, request.native):
        raise unresolved  # a conversation only a passthrough upstream could know
    scrub = target.scrub  # what the upstream says never carries the key's secret
    try:
        reply = scrub.reply(_call(adapter, target, request, body, timeouts))
    except TransportError as exc:
        raise scrub.error(exc) from None
    if reply.stream is not None:  # 2xx: its first bytes decide the attempt
        try:
            reply.first_chunk = next(reply.chunks, b"")
        except TransportError:
            reply.close()
            raise
        if not reply.first_chunk:
            reply.close()
            raise TransportError(Outcome.BAD_RESPONSE, "upstream stream was empty")
    if request.operation == "chat":  # a client of another format: decoded here, once
        reply = decoded(reply, request.format)
    return reply


def refuse_uncarried(
    adapter: ProviderAdapter, target: Target, request: ProxyRequest, body: dict
) -> None:
    """Raise carry.Unsupported for a field of the request this key cannot carry, naming it
    as the client wrote it; asked before the key takes a place in its RPM/TPM windows."""
    if request.operation != "chat" or adapter.passes_through(target, request.native):
        return
    uncarried = request.extra.get("uncarried")  # a field only passthrough carries
    if uncarried is not None:
        raise refused(target.provider, *uncarried)
    if adapter.carries is ALL_CARRIED:  # the hot path: nothing to look at
        return
    typed = request.typed_for(body) if adapter.takes_typed else None
    try:
        if typed is not None:
            adapter.refuse_uncarried_typed(typed)
        else:
            adapter.refuse_uncarried(body)
    except Unsupported as refusal:
        names = request.extra.get("names")  # the chat body's fields in the client's words
        if not names or refusal.param not in names:
            raise
        raise refused(target.provider, names[refusal.param], refusal.what) from None


def _call(
    adapter: ProviderAdapter,
    target: Target,
    request: ProxyRequest,
    body: dict,
    timeouts: Timeouts,
) -> UpstreamReply:
    """The adapter's method for the request's operation."""
    operation, stream = request.operation, request.stream
    if operation == "embeddings":
        return adapter.embeddings(target, body, timeouts)
    if operation == "completions":
        return adapter.completions(target, body, timeouts, stream, request.wants_usage)
    # An adapter that encodes the internal request gets it (none: it reads the chat body).
    typed = {"typed": request.typed_for(body)} if adapter.takes_typed else {}
    if not stream:
        return adapter.chat(target, body, timeouts, request.native, **typed)
    return adapter.chat_stream(target, body, timeouts, request.wants_usage, request.native, **typed)

"""The internal usage beside the gateway's booking `Usage` (gateway/ledger/usage.py)."""

from __future__ import annotations

from gateway.codecs.reply import Usage
from gateway.ledger.usage import Usage as Booked


def of_booked(usage: Booked | None) -> Usage | None:
    """The booked usage as the internal one (None stays None)."""
    if usage is None:
        return None
    return Usage(
        usage.input_tokens,
        usage.output_tokens,
        cache_read=usage.cache_read,
        cache_write=usage.cache_write,
    )


def booked(usage: Usage | None) -> Booked | None:
    """The internal usage as the gateway books it."""
    if usage is None:
        return None
    return Booked(
        usage.input, usage.output, cache_write=usage.cache_write, cache_read=usage.cache_read
    )


def count(value: object) -> int:
    """A token count from a provider's JSON, 0 when it is none."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

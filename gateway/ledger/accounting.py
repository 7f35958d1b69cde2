"""Usage, tokens and the request-log record: written once per client request."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime

from gateway import periods
from gateway.ledger.books import Books
from gateway.ledger.usage import Usage
from gateway.policy import Outcome

__all__ = ["AttemptRecord", "RequestRecord", "Usage", "record"]


def new_request_id() -> str:
    """`req_` and 32 hex digits: 12 of the time in milliseconds, then 80 random bits (the
    layout of a UUIDv7). Ids made later sort later, so the unique index on request_id
    takes each new one at its right-hand edge instead of on a random page of a large
    B-tree (uuid4 ids dirtied a page per row; the writer's insert cost showed it)."""
    return f"req_{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


@dataclass
class AttemptRecord:
    """One upstream call, as it goes into the log."""

    number: int
    provider_key_id: int
    outcome: Outcome
    status_code: int | None
    latency_ms: int
    error: str | None = None

    def row(self) -> dict:
        return {
            "number": self.number,
            "provider_key_id": self.provider_key_id,
            "outcome": self.outcome.value,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "error": self.error,
        }


@dataclass
class RequestRecord:
    """Everything the log row of one client request needs, filled in as the request goes."""

    started_at: datetime
    endpoint: str
    model: str | None
    streamed: bool
    profile_id: int | None = None
    client_key_id: int | None = None
    request_id: str = field(default_factory=lambda: new_request_id())
    provider: str | None = None
    provider_key_id: int | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    status_code: int = 0
    usage: Usage = field(default_factory=Usage)
    latency_ms: int = 0
    ttft_ms: int | None = None
    error: str | None = None
    recorded: bool = False
    # The model the client asked for (None: the one in `model`).
    requested_model: str | None = None
    # Set when the request is booked (pricing.py): integer micro-dollars.
    cost_micros: int = 0
    # Messages dropped to fit the model's context window (a route's `prune`), or None.
    context_pruned: int | None = None

    def log_row(self) -> dict:
        return {
            "request_id": self.request_id,
            "created_at": self.started_at,
            "profile_id": self.profile_id,
            "client_key_id": self.client_key_id,
            "endpoint": self.endpoint,
            "model": self.model,
            "requested_model": self.requested_model if self.requested_model != self.model else None,
            "provider": self.provider,
            "provider_key_id": self.provider_key_id,
            "status_code": self.status_code,
            "streamed": self.streamed,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "total_tokens": self.usage.total_tokens,
            "cache_write_tokens": self.usage.cache_write or None,
            "cache_read_tokens": self.usage.cache_read or None,
            "usage_estimated": self.usage.estimated,
            "cost_micros": self.cost_micros,
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "attempt_count": len(self.attempts),
            "error": self.error,
            "context_pruned": self.context_pruned,
        }

    def usage_row(self) -> dict:
        """This request's contribution to its (day, profile, key, model) roll-up."""
        ok = 200 <= self.status_code < 300
        return {
            "day": periods.local_day(self.started_at),
            "profile_id": self.profile_id,
            "provider_key_id": self.provider_key_id or 0,
            "model": self.model or "",
            "requests": 1,
            "successes": int(ok),
            "failures": int(not ok),
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "total_tokens": self.usage.total_tokens,
            "estimated_tokens": self.usage.total_tokens if self.usage.estimated else 0,
            "cost_micros": self.cost_micros,
        }


def record(
    books: Books, rec: RequestRecord, now: datetime, touch_key: bool = True, strict: bool = False
) -> None:
    """Book the request: log row, attempts, usage roll-up and key state, committed together.

    Called before the last byte goes to the client, so an answer the client got is
    never missing from the books; `recorded` makes a second call a no-op. `touch_key`
    writes the answering key's success (last use, failure streak over) too. With `strict`
    the journal must take it (else JournalFull, and the request is not recorded yet).
    """
    if rec.recorded:
        return
    ok = rec.provider_key_id is not None and 200 <= rec.status_code < 300 and touch_key
    books.write(
        rec.log_row(),
        [attempt.row() for attempt in rec.attempts],
        rec.usage_row(),
        (rec.provider_key_id, now) if ok else None,
        strict=strict,
    )
    rec.recorded = True

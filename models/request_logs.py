"""The request log: one row per client request, with its upstream attempts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from extensions import db
from models.types import UTCDateTime, usd


class RequestLog(db.Model):
    """One client request: who asked for what, which key answered, tokens, cost and timing."""

    __tablename__ = "request_logs"
    # Every index is written on every request: only the ones a query needs. Newest-first
    # listing walks the primary key; retention and date ranges use created_at. "Recent
    # errors" (the overview) reads a partial index that only failed requests are written to.
    __table_args__ = (
        Index(
            "ix_request_logs_errors",
            "id",
            sqlite_where=text("status_code >= 400"),
            postgresql_where=text("status_code >= 400"),
        ),
        # A client key's spend in its budget period, recounted once per period (budgets.py).
        # Partial: requests made with the master key never write to it.
        Index(
            "ix_request_logs_client_key",
            "client_key_id",
            "created_at",
            sqlite_where=text("client_key_id IS NOT NULL"),
            postgresql_where=text("client_key_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(String(40), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    profile_id: Mapped[int | None] = mapped_column(Integer)
    client_key_id: Mapped[int | None] = mapped_column(Integer)
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(128))
    # The model the client asked for, when a route served another (`model` is the one
    # that served and priced it).
    requested_model: Mapped[str | None] = mapped_column(String(128))
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_key_id: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int] = mapped_column(Integer)
    streamed: Mapped[bool] = mapped_column(Boolean, default=False)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # Of the input tokens: written to and read from the upstream's prompt cache.
    cache_write_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int | None] = mapped_column(BigInteger)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # Messages dropped to fit the model's context window (a route's `prune`).
    context_pruned: Mapped[int | None] = mapped_column(Integer)

    attempts: Mapped[list[Attempt]] = relationship(
        order_by="Attempt.number", cascade="all, delete-orphan", lazy="selectin"
    )

    def to_dict(self) -> dict:
        """The log row as the admin API shows it."""
        return {
            "request_id": self.request_id,
            "created_at": self.created_at.isoformat(),
            "profile_id": self.profile_id,
            "client_key_id": self.client_key_id,
            "endpoint": self.endpoint,
            "model": self.model,
            "requested_model": self.requested_model or self.model,
            "provider": self.provider,
            "provider_key_id": self.provider_key_id,
            "status_code": self.status_code,
            "streamed": self.streamed,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cache_write_tokens": self.cache_write_tokens or 0,
            "cache_read_tokens": self.cache_read_tokens or 0,
            "usage_estimated": self.usage_estimated,
            "cost_usd": usd(self.cost_micros),
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "error": self.error,
            "context_pruned": self.context_pruned,
            "attempts": [attempt.to_dict() for attempt in self.attempts],
        }


class Attempt(db.Model):
    """One upstream call made for a client request."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_log_id: Mapped[int] = mapped_column(
        ForeignKey("request_logs.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    provider_key_id: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(24))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict:
        """The attempt as the admin API shows it."""
        return {
            "number": self.number,
            "provider_key_id": self.provider_key_id,
            "outcome": self.outcome,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "error": self.error,
        }

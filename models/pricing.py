"""Per-model price overrides set by an admin (F42); the rest comes from genai-prices."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.types import UTCDateTime


class PriceOverride(db.Model):
    """USD per million tokens for one model id, and optionally per request, as exact decimal
    strings (never floats)."""

    __tablename__ = "price_overrides"

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(128), unique=True)
    input_per_mtok: Mapped[str] = mapped_column(String(32))
    output_per_mtok: Mapped[str] = mapped_column(String(32))
    # USD added to every request of the model (flat-rate costing), or None.
    per_request: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_by: Mapped[str] = mapped_column(String(80))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

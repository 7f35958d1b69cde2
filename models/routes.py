"""Routes (F20, F25): what a requested model name turns into upstream."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.types import UTCDateTime


class Route(db.Model):
    """A model name (or a prefix pattern ending in `*`) → the model sent upstream, the
    models to fall back to, and whether it is paid."""

    __tablename__ = "routes"

    id: Mapped[int] = mapped_column(primary_key=True)
    # `gpt-4o`, an alias such as `smart`, or a pattern such as `openrouter/*`.
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # The model the keys are asked for; None: the name itself. In a pattern's target a
    # `*` stands for what the pattern's `*` matched.
    target: Mapped[str | None] = mapped_column(String(128))
    # Models tried in order when the target has no usable key or every key failed.
    fallbacks: Mapped[list] = mapped_column(JSON, default=list)
    # Paid models are skipped unless paid models are on (KEYRELAY_USE_PAID_MODELS or the
    # profile's override).
    paid: Mapped[bool] = mapped_column(Boolean, default=False)
    # Key selection for requests through this route (None: the profile's strategy).
    strategy: Mapped[str | None] = mapped_column(String(32))
    # What an upstream's "prompt too long" does: error (None too), fallback, prune.
    on_context_overflow: Mapped[str | None] = mapped_column(String(16))
    # Tokens the prompt and answer may take, for `prune` (None: as the upstream says).
    context_window: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def to_dict(self) -> dict:
        """The route as the admin API and models.yaml show it."""
        return {
            "id": self.id,
            "name": self.name,
            "target": self.target,
            "fallbacks": list(self.fallbacks or []),
            "paid": self.paid,
            "strategy": self.strategy,
            "on_context_overflow": self.on_context_overflow or "error",
            "context_window": self.context_window,
        }

"""Conversation pins: which provider key holds a conversation's state (a response a
Responses-API upstream keeps) or served a client's session last (its prompt cache)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.types import UTCDateTime


class ConversationPin(db.Model):
    """One conversation (`response:<id>`, or `session:<digest>`) and the key it is pinned to."""

    __tablename__ = "conversation_pins"

    scope: Mapped[str] = mapped_column(String(80), primary_key=True)
    provider_key_id: Mapped[int] = mapped_column(Integer)
    # The client key whose conversation it is (None: the master key); a response pinned
    # here is read back only by it, as a stored response is.
    client_key_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

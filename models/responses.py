"""Stored Responses-API answers (`store: true`), for `previous_response_id` and
`GET /v1/responses/{id}`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.types import UTCDateTime


class StoredResponse(db.Model):
    """One response with the conversation that led to it (in the gateway's chat form)."""

    __tablename__ = "stored_responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The client key that made it (None: the master key); only it may read or continue it.
    client_key_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # JSON: the chat messages of the whole conversation, this answer included.
    conversation: Mapped[str] = mapped_column(Text)
    # JSON: the response object as the client got it.
    response: Mapped[str] = mapped_column(Text)

"""Facts about the database itself, such as its identity."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.types import UTCDateTime

# The database's identity: a UUID made when the database is first set up. The state files
# of the instance folder (the booking journal, limits.bin) carry it, so that a new
# database beside an old instance folder never inherits the old one's bookings or windows.
DATABASE_ID = "database_id"


class InstanceMeta(db.Model):
    """One named value about this database (e.g. `database_id`)."""

    __tablename__ = "keyrelay_meta"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

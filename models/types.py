"""Column types shared by the models."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import functions
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime stored as a naive UTC timestamp (SQLite has no zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; KeyRelay stores UTC only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def usd(micros: int) -> str:
    """Integer micro-dollars as an exact USD string with six decimals ("0.000020")."""
    from decimal import Decimal

    return f"{Decimal(int(micros or 0)).scaleb(-6):.6f}"


@compiles(functions.sum, "postgresql")
def _integer_sum(element, compiler, **kw) -> str:
    """PostgreSQL sums BIGINT columns to NUMERIC (Python Decimal, which mixes badly with
    floats and serialises as a string); integer sums come back as BIGINT, as on SQLite."""
    sql = compiler.visit_function(element, **kw)
    return f"CAST({sql} AS BIGINT)" if isinstance(element.type, Integer) else sql

"""Alembic's environment: KeyRelay's models are the target, the connection is the one
gateway.schema hands over (start-up and `flask db …`), else KEYRELAY_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import models  # noqa: F401 - registers every table on the metadata
from extensions import db

config = context.config
target_metadata = db.metadata


def _run(connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode copies a table and drops the old one; with foreign keys on, that drop
        # would cascade to the rows referencing it. The pragma is ignored inside a
        # transaction, so what the caller did so far (adopting an old database) is committed.
        if connection.in_transaction():
            connection.commit()
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        # SQLite cannot ALTER most things in place: batch mode copies the table instead.
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            connection.commit()
    except BaseException:
        if sqlite:
            connection.rollback()
        raise
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")


def run_migrations_online() -> None:
    """Run on the given connection, or on one to the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("KeyRelay's migrations run online only (./kr db upgrade)")
run_migrations_online()

"""The database's schema: Alembic revisions in migrations/, brought to head at start.

A database made before KeyRelay used Alembic (tables but no `alembic_version`) is adopted
once: tables, nullable columns and indexes it lacks are added to reach the initial
revision's shape (the old start-up step), then it is stamped with that revision.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, MetaData, inspect
from sqlalchemy.schema import CreateColumn

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
INITIAL = "0001"
# pg_advisory_lock's key: every KeyRelay host sharing the database takes the same one.
LOCK_KEY = zlib.crc32(b"keyrelay.schema")
log = logging.getLogger("keyrelay.schema")


def config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration for KeyRelay's migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision."""
    return ScriptDirectory.from_config(config()).get_current_head()


def known(revision: str) -> bool:
    """Whether `revision` is one of this version's migrations."""
    if not revision:
        return False
    try:
        return ScriptDirectory.from_config(config()).get_revision(revision) is not None
    except CommandError:  # "No such revision or branch"
        return False


def current(connection: Connection) -> str | None:
    """The database's revision (None: not under Alembic)."""
    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def locked(engine: Engine) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock for the schema (hosts sharing the database start
    one at a time); SQLite is one host's file, serialised by the caller's flock."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({LOCK_KEY})")
        conn.commit()
        try:
            yield
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({LOCK_KEY})")
            conn.commit()


def upgrade(engine: Engine) -> str:
    """Bring the database to head (adopting a pre-Alembic one first); returns the revision.
    The caller holds the lock (locked() and, for SQLite, its flock)."""
    _quiet_alembic()
    with engine.connect() as conn:
        before = current(conn)
        if before is None and _has_tables(conn):
            _adopt(conn)
        command.upgrade(config(conn), "head")
        conn.commit()
        after = current(conn)
    if after != before:
        log.info("database upgraded from %s to %s", before or "empty", after)
    return after


def _quiet_alembic() -> None:
    """Alembic says six INFO lines on every start and CLI call, migration or not: keep
    them for debug logging (`./kr -v`); upgrade() says in one line what changed."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)


def initial_snapshot() -> MetaData:
    """The tables of the initial revision (its frozen MetaData)."""
    return ScriptDirectory.from_config(config()).get_revision(INITIAL).module.SNAPSHOT


def _has_tables(conn: Connection) -> bool:
    return bool(set(inspect(conn).get_table_names()) - {"alembic_version"})


def _adopt(conn: Connection) -> None:
    """A database made before Alembic: add what the initial revision has and it lacks
    (tables, nullable columns, indexes), then stamp it with the initial revision."""
    snapshot: MetaData = ScriptDirectory.from_config(config()).get_revision(INITIAL).module.SNAPSHOT
    snapshot.create_all(conn)  # tables added since the database was made
    inspector = inspect(conn)
    for table in snapshot.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                ddl = CreateColumn(column).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    command.stamp(config(conn), INITIAL)

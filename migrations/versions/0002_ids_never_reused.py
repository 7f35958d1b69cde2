"""Ids of client keys, provider keys and users are never reused.

SQLite hands out max(id) + 1 to a table without AUTOINCREMENT, so deleting the newest
client key and creating another gave the new key the old key's id, and with it the old
key's stored responses, request-log rows and budget; the same for provider keys (their
daily usage) and users (their sessions). On SQLite the three tables are rebuilt with
AUTOINCREMENT, keeping their rows, and each table's sequence starts above every id that
other tables still hold for it (rows of keys deleted before this revision). Stored
responses whose client key is gone are deleted. PostgreSQL's sequences never hand an id
out twice: nothing to do there but that clean-up.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# table -> (table, column) pairs that keep its ids after its rows are deleted.
TABLES = {
    "client_keys": [
        ("request_logs", "client_key_id"),
        ("stored_responses", "client_key_id"),
        ("budget_alerts", "client_key_id"),
        ("credit_transactions", "client_key_id"),
    ],
    "provider_keys": [
        ("request_logs", "provider_key_id"),
        ("attempts", "provider_key_id"),
        ("usage_daily", "provider_key_id"),
    ],
    "users": [],
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _autoincrement(bind)
    # Last: their ids count above, when the sequences start.
    bind.exec_driver_sql(
        "DELETE FROM stored_responses WHERE client_key_id IS NOT NULL"
        " AND client_key_id NOT IN (SELECT id FROM client_keys)"
    )


def _autoincrement(bind) -> None:
    """Rebuild the tables with AUTOINCREMENT, their sequences above every id in use."""
    # A rebuild drops the old table; with foreign keys on, that drop would cascade to the
    # rows that reference it (budget alerts, credit transactions): migrations/env.py
    # turns them off around the migrations.
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("SQLite foreign keys must be off to rebuild tables")
    for table, holders in TABLES.items():
        _rebuild(table)
        _start_sequence_above(bind, table, holders)
    problems = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise RuntimeError(f"foreign keys broken by the rebuild: {problems[:5]}")


def _rebuild(table: str) -> None:
    """Copy the table into one made with AUTOINCREMENT (same columns, indexes, rows)."""
    with op.batch_alter_table(
        table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass


def _start_sequence_above(bind, table: str, holders: list[tuple[str, str]]) -> None:
    """Next id above the table's own and above those other tables still hold."""
    highest = [f"SELECT max(id) FROM {table}"]
    highest += [f"SELECT max({column}) FROM {holder}" for holder, column in holders]
    top = max((bind.exec_driver_sql(sql).scalar() or 0 for sql in highest), default=0)
    bind.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
    bind.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, top))


def downgrade() -> None:
    """AUTOINCREMENT is kept: going back to reusable ids would reopen the leak."""

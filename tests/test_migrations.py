"""Schema migrations (Alembic): a fresh database at head, with no drift from the models, on
SQLite and PostgreSQL; a database made before Alembic adopted with its rows; `flask db`;
hosts starting at once against one PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, inspect, text

from app import create_app
from extensions import db
from gateway import schema
from gateway.keys import client_keys as clientkeys
from tests.conftest import MASTER_KEY

ROOT = Path(__file__).resolve().parent.parent
# own_migrations: the `app` fixture's database is migrated by the app, as a new one is.
pytestmark = [pytest.mark.both_databases, pytest.mark.own_migrations]


def _url(app) -> str:
    return app.config["SQLALCHEMY_DATABASE_URI"]


def _revisions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(text("SELECT version_num FROM alembic_version")))
    finally:
        engine.dispose()


def test_a_fresh_database_is_at_head_and_matches_the_models(app):
    assert _revisions(_url(app)) == [schema.head()]
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []
        indexes = {i["name"]: i for i in inspect(conn).get_indexes("request_logs")}
        where = {
            name: (index.get("dialect_options") or {}).get(f"{conn.dialect.name}_where")
            for name, index in indexes.items()
        }
        if conn.dialect.name == "postgresql":  # the partial indexes are partial there too
            assert "status_code >= 400" in str(where["ix_request_logs_errors"])
            assert "client_key_id IS NOT NULL" in str(where["ix_request_logs_client_key"])
        else:
            sql = conn.scalar(
                text("SELECT sql FROM sqlite_master WHERE name = :n"),
                {"n": "ix_request_logs_errors"},
            )
            assert "WHERE status_code >= 400" in sql


def _old_database(url: str) -> None:
    """A database as an earlier KeyRelay left it: the initial schema less a table, two
    nullable columns and an index, with rows in it."""
    snapshot = schema.initial_snapshot()
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            snapshot.create_all(conn)
            conn.execute(text("DROP TABLE stored_responses"))
            conn.execute(text("DROP INDEX ix_request_logs_errors"))
            for table, column in (("request_logs", "ttft_ms"), ("provider_keys", "options")):
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
            conn.execute(
                text("INSERT INTO profiles (name, created_at) VALUES ('default', :at)"),
                {"at": datetime(2025, 1, 2, tzinfo=UTC).replace(tzinfo=None)},
            )
            conn.execute(
                text(
                    "INSERT INTO request_logs (request_id, created_at, endpoint, model,"
                    " status_code, streamed, input_tokens, output_tokens, total_tokens,"
                    " usage_estimated, cost_micros, latency_ms, attempt_count)"
                    " VALUES ('req_old', :at, 'chat.completions', 'gpt-4o-mini', 500,"
                    " false, 1, 2, 3, false, 0, 10, 1)"
                ),
                {"at": datetime(2025, 1, 2, tzinfo=UTC).replace(tzinfo=None)},
            )
    finally:
        engine.dispose()


def test_a_database_made_before_alembic_is_adopted_and_keeps_its_rows(settings):
    url = settings["DATABASE_URL"] or f"sqlite:///{Path(settings['INSTANCE_PATH'])}/keyrelay.db"
    Path(settings["INSTANCE_PATH"]).mkdir(parents=True)
    _old_database(url)
    app = create_app({**settings, "DATABASE_URL": url})
    try:
        assert _revisions(url) == [schema.head()]
        with app.app_context(), db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, db.metadata) == []
            inspector = inspect(conn)
            assert "ix_request_logs_errors" in {
                i["name"] for i in inspector.get_indexes("request_logs")
            }
            assert conn.scalar(text("SELECT status_code FROM request_logs")) == 500
            assert conn.scalar(text("SELECT count(*) FROM profiles")) == 1
    finally:
        app.extensions["keyrelay"].close()
        with app.app_context():
            db.engine.dispose()
    # A second start finds it at head and changes nothing.
    again = create_app({**settings, "DATABASE_URL": url})
    again.extensions["keyrelay"].close()
    with again.app_context():
        db.engine.dispose()
    assert _revisions(url) == [schema.head()]


def test_flask_db_commands(app):
    runner = app.test_cli_runner()
    current = runner.invoke(args=["db", "current"])
    assert current.exit_code == 0, current.output
    assert f"database at revision {schema.head()} (head {schema.head()})" in current.output
    upgraded = runner.invoke(args=["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"database at revision {schema.head()}" in upgraded.output


def _start(instance: Path, url: str | None, secret: str) -> subprocess.CompletedProcess:
    """create_app in a process of its own, as a gunicorn worker or another host would."""
    env = {
        **os.environ,
        "KEYRELAY_INSTANCE_PATH": str(instance),
        "KEYRELAY_MASTER_KEY": MASTER_KEY,
        "KEYRELAY_SECRET_KEY": secret,
        "KEYRELAY_SCHEDULER": "false",
        "KEYRELAY_ADMIN_PASSWORD": "admin-pass-123",
    }
    env.pop("KEYRELAY_DATABASE_URL", None)
    if url:
        env["KEYRELAY_DATABASE_URL"] = url
    code = "from app import create_app; create_app().extensions['keyrelay'].close()"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_hosts_starting_at_once_on_postgresql_migrate_once(tmp_path, pg_url):
    """Three processes start on one fresh PostgreSQL database: two workers of one host
    (one instance folder, its flock) and another host (its own folder): the advisory lock
    lets one migrate and create the first admin."""
    secret = Fernet.generate_key().decode()
    folders = [tmp_path / "a", tmp_path / "a", tmp_path / "b"]
    with ThreadPoolExecutor(len(folders)) as pool:
        done = list(pool.map(lambda folder: _start(folder, pg_url, secret), folders))
    assert [run.returncode for run in done] == [0] * len(folders), [r.stderr[-2000:] for r in done]
    assert _revisions(pg_url) == [schema.head()]
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM profiles")) == 1
            assert conn.scalar(text("SELECT count(*) FROM users")) == 1
    finally:
        engine.dispose()


def _database_at_0001(url: str) -> None:
    """A database migrated to 0001 by an earlier KeyRelay, with three client keys made and
    the newest deleted: its request-log row and stored response still hold its id."""
    engine = create_engine(url)
    at = datetime(2025, 1, 2)
    try:
        with engine.begin() as conn:
            schema.initial_snapshot().create_all(conn)
            conn.execute(
                text("INSERT INTO profiles (name, created_at) VALUES ('default', :at)"), {"at": at}
            )
            for n in (1, 2, 3):
                conn.execute(
                    text(
                        "INSERT INTO client_keys (profile_id, name, key_hash, key_hint,"
                        " created_by, created_at, updated_at) VALUES"
                        " (1, :name, :hash, 'kr-…', 'admin', :at, :at)"
                    ),
                    {"name": f"k{n}", "hash": f"{n:064d}", "at": at},
                )
            conn.execute(
                text(
                    "INSERT INTO budget_alerts (client_key_id, period_start, threshold, sent_at)"
                    " VALUES (1, :at, 80, :at)"
                ),
                {"at": at},
            )
            conn.execute(
                text(
                    "INSERT INTO credit_transactions (reference, client_key_id, status, amount,"
                    " currency, amount_micros, event, created_at) VALUES"
                    " ('ref-1', 2, 'paid', 5, 'usd', 50000, 'topup', :at)"
                ),
                {"at": at},
            )
            for key_id in (1, 3):
                conn.execute(
                    text(
                        "INSERT INTO stored_responses (id, client_key_id, created_at,"
                        " conversation, response) VALUES (:id, :key, :at, '[]', '{}')"
                    ),
                    {"id": f"resp_{key_id}", "key": key_id, "at": at},
                )
            conn.execute(text("DELETE FROM client_keys WHERE id = 3"))
        with engine.connect() as conn:
            schema.command.stamp(schema.config(conn), schema.INITIAL)
            conn.commit()
    finally:
        engine.dispose()


def test_a_database_at_0001_gets_ids_that_are_never_reused(settings):
    url = settings["DATABASE_URL"] or f"sqlite:///{Path(settings['INSTANCE_PATH'])}/keyrelay.db"
    Path(settings["INSTANCE_PATH"]).mkdir(parents=True)
    _database_at_0001(url)
    app = create_app({**settings, "DATABASE_URL": url})
    try:
        assert _revisions(url) == [schema.head()]
        with app.app_context():
            with db.engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                assert compare_metadata(context, db.metadata) == []
                if conn.dialect.name == "sqlite":
                    for table in ("client_keys", "provider_keys", "users"):
                        sql = conn.scalar(
                            text("SELECT sql FROM sqlite_master WHERE name = :n"), {"n": table}
                        )
                        assert "AUTOINCREMENT" in sql, sql
                    assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                # The rows that reference client keys survived the rebuild untouched...
                assert conn.scalar(text("SELECT client_key_id FROM budget_alerts")) == 1
                assert conn.scalar(text("SELECT client_key_id FROM credit_transactions")) == 2
                # ...and the deleted key's stored response is gone, the others' kept.
                assert list(conn.scalars(text("SELECT id FROM stored_responses"))) == ["resp_1"]
            # The deleted key's id 3 is not handed out again.
            spec = clientkeys.parse({"name": "new"}, creating=True)
            row, _ = clientkeys.create(db.session, spec, "admin", datetime.now(UTC))
            db.session.commit()
            assert row.id == 4
    finally:
        app.extensions["keyrelay"].close()
        with app.app_context():
            db.engine.dispose()


def _database_at_0006(url: str) -> None:
    """A database at 0006 with a member whose two keys served three requests (one of them
    priced at nothing), and another key's request beside them."""
    engine = create_engine(url)
    at = datetime(2026, 12, 1)
    try:
        with engine.connect() as conn:
            schema.command.upgrade(schema.config(conn), "0006")
            conn.commit()
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO profiles (name, created_at) VALUES ('default', :at)"), {"at": at}
            )
            conn.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, created_at,"
                    " session_version) VALUES ('mia', 'x', 'member', :at, 1)"
                ),
                {"at": at},
            )
            conn.execute(
                text(
                    "INSERT INTO members (user_id, balance_micros, max_keys, profile_id,"
                    " created_at) VALUES (1, 5000, 5, 1, :at)"
                ),
                {"at": at},
            )
            for n, member in ((1, 1), (2, 1), (3, None)):
                conn.execute(
                    text(
                        "INSERT INTO client_keys (profile_id, name, key_hash, key_hint,"
                        " created_by, created_at, updated_at, member_id) VALUES"
                        " (1, :name, :hash, 'kr-…', 'admin', :at, :at, :member)"
                    ),
                    {"name": f"k{n}", "hash": f"{n:064d}", "at": at, "member": member},
                )
            for n, (key, cost) in enumerate(((1, 1200), (2, 34), (2, 0), (3, 99_000))):
                conn.execute(
                    text(
                        "INSERT INTO request_logs (request_id, created_at, client_key_id,"
                        " endpoint, status_code, streamed, input_tokens, output_tokens,"
                        " total_tokens, usage_estimated, cost_micros, latency_ms,"
                        " attempt_count) VALUES (:id, :at, :key, 'chat.completions', 200,"
                        " false, 1, 2, 3, false, :cost, 10, 1)"
                    ),
                    {"id": f"req_{n}", "at": at, "key": key, "cost": cost},
                )
    finally:
        engine.dispose()


def test_a_member_at_0006_starts_their_running_spend_from_the_request_log(settings):
    url = settings["DATABASE_URL"] or f"sqlite:///{Path(settings['INSTANCE_PATH'])}/keyrelay.db"
    Path(settings["INSTANCE_PATH"]).mkdir(parents=True)
    _database_at_0006(url)
    app = create_app({**settings, "DATABASE_URL": url})
    try:
        assert _revisions(url) == [schema.head()]
        with app.app_context(), db.engine.connect() as conn:
            row = conn.execute(text("SELECT balance_micros, spent_micros FROM members")).one()
            assert tuple(row) == (5000, 1234)  # the member's keys' requests, not key 3's
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, db.metadata) == []
    finally:
        app.extensions["keyrelay"].close()
        with app.app_context():
            db.engine.dispose()

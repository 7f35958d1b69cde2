"""`./kr db …`: the schema's Alembic revisions (gateway/schema.py)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from alembic import command
from flask import current_app
from flask.cli import AppGroup

from extensions import db
from gateway import schema

db_cli = AppGroup("db", help="Database schema migrations (Alembic, migrations/).")


@db_cli.command("upgrade")
def upgrade_command() -> None:
    """Bring the database to the newest revision (start-up does this too)."""
    with _init_lock(), schema.locked(db.engine):
        revision = schema.upgrade(db.engine)
    click.echo(f"database at revision {revision} (head {schema.head()})")


@db_cli.command("current")
def current_command() -> None:
    """The database's revision and the newest one."""
    with db.engine.connect() as conn:
        revision = schema.current(conn)
    click.echo(f"database at revision {revision or 'none'} (head {schema.head()})")


@db_cli.command("revision")
@click.option("-m", "--message", required=True, help="What the schema change is.")
def revision_command(message: str) -> None:
    """Write a new revision from the models' difference to this (upgraded) database."""
    with db.engine.connect() as conn:
        command.revision(schema.config(conn), message=message, autogenerate=True)


@contextmanager
def _init_lock() -> Iterator[None]:
    """The instance's start-up flock: a start-up and this command do not overlap."""
    with open(Path(current_app.instance_path) / ".init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield

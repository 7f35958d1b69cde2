"""Backups of an instance: the database and the key files in one archive, and restoring one.

An archive (`keyrelay-<UTC time>.tar.gz`, mode 0600) holds `manifest.json` (format, time,
database engine and id, the schema's Alembic revision, its tables and columns, each entry
and whether it is a secret), the database (`keyrelay.db`, a copy made with SQLite's online
backup API, which is consistent while workers commit; or `database.dump`, `pg_dump -Fc`),
and the key files `secret.key` and `master_key` when the instance uses them.

Restoring replaces the database and key files of an instance that nothing serves: every
serving process holds a shared `flock` on `instance/serving.lock` for its whole life, and
a restore needs it exclusively. What it replaces is kept in `instance/pre-restore-<time>/`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from gateway import schema as schemas

log = logging.getLogger(__name__)

FORMAT = 1
SERVING_LOCK = "serving.lock"
MANIFEST = "manifest.json"
SQLITE_ENTRY = "keyrelay.db"
POSTGRES_ENTRY = "database.dump"
KEY_FILES = ("secret.key", "master_key")  # secret entries, when the instance has them
# Files of the instance that belong to one database's state: set aside with it.
STATE_FILES = ("limits.bin", "circuits.bin")
PREFIX, SUFFIX = "keyrelay-", ".tar.gz"
IGNORED_TABLES = {"alembic_version", "sqlite_sequence", "sqlite_stat1"}


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message says why and what to do."""


# -- who is serving -------------------------------------------------------------------


def hold_serving_lock(instance: Path) -> int:
    """Mark this process as serving the instance until it exits (a shared lock; waits
    while a restore runs, so a worker never starts on half-replaced files)."""
    fd = os.open(instance / SERVING_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


@contextlib.contextmanager
def nothing_serving(instance: Path):
    """Hold the instance's serving lock exclusively, or refuse when a server holds it."""
    fd = os.open(instance / SERVING_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"KeyRelay is serving from {instance} (a process holds {SERVING_LOCK}): stop "
                "it (gunicorn, ./start.sh, the container) and run the restore again."
            ) from None
        yield
    finally:
        os.close(fd)


# -- creating -------------------------------------------------------------------------


def engine_of(database_url: str) -> str:
    """'sqlite' or 'postgresql' (the URL's backend)."""
    backend = make_url(database_url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"Backups support SQLite and PostgreSQL, not {backend}.")
    return backend


def default_name(now: datetime) -> str:
    """The archive's file name: its UTC time, so names sort by age."""
    return f"{PREFIX}{_stamp(now)}{SUFFIX}"


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def create(
    instance: Path, database_url: str, engine: Engine, destination: Path, now: datetime
) -> dict:
    """Write a backup archive to `destination` (a file, or a folder for the default name);
    returns the manifest, with `path`."""
    if destination.is_dir() or not destination.name.endswith(SUFFIX):
        destination.mkdir(parents=True, exist_ok=True)
        destination = destination / default_name(now)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".backup-") as work:
        work = Path(work)
        if engine_of(database_url) == "sqlite":
            entry = _copy_sqlite(Path(make_url(database_url).database), work / SQLITE_ENTRY)
            schema, database_id = sqlite_schema(entry), _sqlite_database_id(entry)
            revision = sqlite_revision(entry)
        else:
            with engine.connect() as conn:  # before the dump: a migration in between is
                revision = schemas.current(conn)  # caught by the tables' check
            entry = _pg_dump(database_url, work / POSTGRES_ENTRY)
            schema, database_id = engine_schema(engine), _engine_database_id(engine)
        entries = [(entry, False)]
        entries += [(instance / n, True) for n in KEY_FILES if (instance / n).is_file()]
        manifest = {
            "format": FORMAT,
            "created_at": now.isoformat(),
            "engine": engine_of(database_url),
            "database_id": database_id,
            "revision": revision,
            "schema": schema,
            "entries": [
                {"name": path.name, "secret": secret, "sha256": _sha256(path)}
                for path, secret in entries
            ],
        }
        _write_archive(destination, manifest, entries)
    return {**manifest, "path": str(destination)}


def _copy_sqlite(source: Path, target: Path) -> Path:
    """A consistent copy while others write: one backup step, in one read transaction."""
    if not source.is_file():
        raise BackupError(f"No database at {source}.")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30.0)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # pages=-1: all pages in one step, one snapshot
        dst.execute("PRAGMA journal_mode=DELETE")  # a single file in the archive
        if dst.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise BackupError(f"The copy of {source} failed SQLite's quick_check.")
    finally:
        dst.close()
        src.close()
    return target


def _pg_env(database_url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password, and the environment that passes it."""
    url = make_url(database_url)
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(command: list[str], env: dict[str, str]) -> None:
    """Run pg_dump / pg_restore; its stderr is the error's message."""
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} is not installed (Debian: postgresql-client).")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed: {done.stderr.strip()[-800:]}")


def _pg_dump(database_url: str, target: Path) -> Path:
    url, env = _pg_env(database_url)
    _run(["pg_dump", "--format=custom", "--no-owner", f"--file={target}", url], env)
    return target


def sqlite_schema(path: Path) -> dict[str, list[str]]:
    """Table → its columns, read from a SQLite file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        return {
            t: sorted(r[1] for r in conn.execute(f'PRAGMA table_info("{t}")'))
            for t in sorted(tables)
            if t not in IGNORED_TABLES
        }
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"The backup's database cannot be read: {exc}.") from None
    finally:
        conn.close()


def sqlite_revision(path: Path) -> str | None:
    """The Alembic revision of a SQLite file (None: made before migrations)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:  # no alembic_version: a database made before Alembic
        row = None
    finally:
        conn.close()
    return row[0] if row else None


def check_revision(revision: str | None) -> None:
    """Refuse a database at a revision this version does not have (a newer KeyRelay's
    migration); an older revision is brought to head at the next start."""
    if revision is None or schemas.known(revision):
        return
    raise BackupError(
        f"The backup's schema version is newer than this KeyRelay's: its database is at "
        f"migration {revision}, which this version does not have (its newest is "
        f"{schemas.head()}). Restore it with the KeyRelay version that made it (or a newer one)."
    )


def engine_schema(engine: Engine) -> dict[str, list[str]]:
    """Table → its columns, read from a live database."""
    inspector = inspect(engine)
    return {
        t: sorted(c["name"] for c in inspector.get_columns(t))
        for t in sorted(inspector.get_table_names())
        if t not in IGNORED_TABLES
    }


def _sqlite_database_id(path: Path) -> str | None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM keyrelay_meta WHERE name='database_id'").fetchone()
    except sqlite3.OperationalError:  # made before databases had an identity
        row = None
    finally:
        conn.close()
    return row[0] if row else None


def _engine_database_id(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT value FROM keyrelay_meta WHERE name='database_id'")
        ).scalar()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_archive(destination: Path, manifest: dict, entries: list[tuple[Path, bool]]) -> None:
    """The archive, 0600 from its first byte (it holds the keys), renamed into place whole."""
    partial = destination.with_name(f".{destination.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
        archive.addfile(info, io.BytesIO(data))
        for path, _secret in entries:
            info = archive.gettarinfo(str(path), arcname=path.name)
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
            with open(path, "rb") as handle:
                archive.addfile(info, handle)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, destination)


# -- restoring ------------------------------------------------------------------------


def read_manifest(archive_path: Path) -> dict:
    """The archive's manifest, checked for a format this version reads."""
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            manifest = json.load(archive.extractfile(MANIFEST))
    except (OSError, KeyError, tarfile.TarError, ValueError) as exc:
        raise BackupError(f"{archive_path} is not a KeyRelay backup ({exc}).") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{archive_path} is a backup of format {manifest.get('format')!r}; this KeyRelay "
            f"reads format {FORMAT}. Restore it with the version that made it."
        )
    return manifest


def check_schema(backup: Mapping[str, list[str]], known: Mapping[str, set[str]]) -> None:
    """Refuse a database with tables or columns this version does not know (made by a
    newer version); older ones are fine: missing tables and columns are added at start."""
    if "provider_keys" not in backup:
        raise BackupError("The backup's database has no provider_keys: not a KeyRelay database.")
    unknown = [
        f"{table}.{column}" if table in known else table
        for table, columns in backup.items()
        for column in (columns if table in known else [None])
        if table not in known or column not in known[table]
    ]
    if unknown:
        shown = ", ".join(sorted(unknown)[:8]) + (" …" if len(unknown) > 8 else "")
        raise BackupError(
            f"The backup's schema version is newer than this KeyRelay's: it has {shown}, "
            "which this version does not know. Restore it with the KeyRelay version that "
            "made it (or a newer one)."
        )


def restore(
    instance: Path,
    database_url: str,
    archive_path: Path,
    known: Mapping[str, set[str]],
    now: datetime,
) -> dict:
    """Replace the instance's database and key files with the archive's; the replaced ones
    go to `pre-restore-<time>/`. The caller has closed its own database connections and
    holds `nothing_serving`. Returns {restored, aside, database_id}."""
    manifest = read_manifest(archive_path)
    engine = engine_of(database_url)
    if manifest.get("engine") != engine:
        raise BackupError(
            f"The backup is of a {manifest.get('engine')} database; this instance uses {engine}."
        )
    with tempfile.TemporaryDirectory(dir=instance, prefix=".restore-") as work:
        work = Path(work)
        names = _extract(archive_path, manifest, work)
        if engine == "sqlite":
            check_revision(sqlite_revision(work / SQLITE_ENTRY))
            check_schema(sqlite_schema(work / SQLITE_ENTRY), known)
        else:
            check_revision(manifest.get("revision"))
            check_schema(manifest.get("schema") or {}, known)
        aside = instance / f"pre-restore-{_stamp(now)}"
        aside.mkdir(mode=0o700)
        if engine == "sqlite":
            _swap_sqlite(Path(make_url(database_url).database), work / SQLITE_ENTRY, aside)
        else:
            _pg_dump(database_url, aside / POSTGRES_ENTRY)  # the current database, kept
            url, env = _pg_env(database_url)
            command = ["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction"]
            _run([*command, f"--dbname={url}", str(work / POSTGRES_ENTRY)], env)
        for name in [n for n in names if n in KEY_FILES] + list(STATE_FILES):
            _move_aside(instance / name, aside)
            if name in names:
                os.replace(work / name, instance / name)
    return {"restored": names, "aside": str(aside), "database_id": manifest.get("database_id")}


def _extract(archive_path: Path, manifest: dict, work: Path) -> list[str]:
    """The manifest's entries, each checked against its checksum; secrets stay 0600."""
    listed = {entry["name"]: entry for entry in manifest.get("entries", [])}
    allowed = {SQLITE_ENTRY, POSTGRES_ENTRY, *KEY_FILES}
    if not listed or set(listed) - allowed:
        raise BackupError(f"The backup lists unexpected entries: {sorted(set(listed) - allowed)}.")
    with tarfile.open(archive_path, "r:gz") as archive:
        for name in listed:
            source = archive.extractfile(name) if name in archive.getnames() else None
            if source is None:
                raise BackupError(f"The backup is missing {name}.")
            fd = os.open(work / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as target:
                shutil.copyfileobj(source, target)
            if _sha256(work / name) != listed[name]["sha256"]:
                raise BackupError(f"{name} in the backup does not match its checksum.")
    return sorted(listed)


def _move_aside(path: Path, aside: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, aside / path.name)


def _swap_sqlite(database: Path, copy: Path, aside: Path) -> None:
    """The database file (and its WAL and shared-memory files) aside, the copy in place."""
    for suffix in ("-wal", "-shm", ""):
        _move_aside(database.with_name(database.name + suffix), aside)
    os.replace(copy, database)


# -- the scheduled backup -------------------------------------------------------------


def prune(directory: Path, keep: int) -> list[str]:
    """Delete all but the `keep` newest archives of the folder (by their time-stamped
    names; other files are left alone). Returns the names deleted."""
    archives = sorted(
        p for p in directory.glob(f"{PREFIX}*{SUFFIX}") if p.is_file() and len(p.name) > 20
    )
    doomed = archives[:-keep] if keep > 0 else []
    for path in doomed:
        path.unlink()
    return [path.name for path in doomed]


def backup_dir(config: Mapping) -> Path:
    """KEYRELAY_BACKUP_DIR, or `<instance>/backups`."""
    return Path(config.get("BACKUP_DIR") or Path(config["INSTANCE_PATH"]) / "backups")


def scheduled_backup(gateway, now: datetime, config: Mapping) -> dict:
    """The daily backup job: an archive in the backup folder, then only the newest
    KEYRELAY_BACKUP_KEEP kept."""
    directory = backup_dir(config)
    made = create(
        Path(config["INSTANCE_PATH"]),
        config["SQLALCHEMY_DATABASE_URI"],
        gateway.engine,
        directory,
        now,
    )
    deleted = prune(directory, config["BACKUP_KEEP"])
    log.info("backup written to %s; %d old backups deleted", made["path"], len(deleted))
    return {"path": made["path"], "deleted": deleted}

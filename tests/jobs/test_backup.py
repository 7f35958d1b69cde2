"""`flask backup create|restore` and the scheduled backup: a consistent copy while real
traffic is written, keys that come along, and restores that refuse what they must."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

import urllib3

from app import create_app
from extensions import db
from gateway import schema
from gateway.jobs import backup, scheduler
from tests.conftest import MASTER_KEY, LiveServer, chat
from tests.test_durability import ROOT, Gunicorn, free_port

SECRET = "sk-backup-secret-0000000000000001"


def _flask(instance: Path, *args: str) -> subprocess.CompletedProcess:
    """A `flask --app app` command on the instance, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    env |= {"KEYRELAY_INSTANCE_PATH": str(instance), "KEYRELAY_MASTER_KEY": MASTER_KEY}
    command = [sys.executable, "-m", "flask", "--app", "app", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def _open_archive(path: Path, into: Path) -> dict:
    with tarfile.open(path, "r:gz") as archive:
        archive.extractall(into, filter="data")
    return json.loads((into / "manifest.json").read_text())


def _ids(database: Path) -> set[str]:
    conn = sqlite3.connect(database)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {row[0] for row in conn.execute("SELECT request_id FROM request_logs")}
    finally:
        conn.close()


def test_backup_while_serving_has_every_committed_request_and_restore_refuses(tmp_path, fake):
    """The real gunicorn serves and books traffic while `backup create` copies the database;
    the copy is whole and holds every request committed before it began. `backup restore`
    refuses while that gunicorn runs."""
    instance = tmp_path / "instance"
    server = Gunicorn(instance, None, SCHEDULER="false")
    http = urllib3.PoolManager(retries=False, timeout=10)
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    stop, sent, errors = threading.Event(), [], []

    def traffic() -> None:
        while not stop.is_set():
            answer = http.request(
                "POST", f"{server.url}/v1/chat/completions", json=chat(), headers=auth
            )
            (sent if answer.status == 200 else errors).append(
                answer.headers.get("x-keyrelay-request-id")
            )

    try:
        key = {"name": "k", "provider": "openai", "secret": SECRET, "base_url": fake.base_url}
        assert (
            http.request("POST", f"{server.url}/api/admin/keys", json=key, headers=auth).status
            == 201
        )
        before = []
        for _ in range(15):
            answer = http.request(
                "POST", f"{server.url}/v1/chat/completions", json=chat(), headers=auth
            )
            assert answer.status == 200, answer.data
            before.append(answer.headers["x-keyrelay-request-id"])
        # Committed: the admin API reads them from the database.
        for _ in range(200):
            logs = http.request(
                "GET", f"{server.url}/api/admin/logs?limit=100", headers=auth
            ).json()
            if {row["request_id"] for row in logs["data"]} >= set(before):
                break
            threading.Event().wait(0.05)
        threads = [threading.Thread(target=traffic) for _ in range(3)]
        for thread in threads:
            thread.start()
        while len(sent) < 10:
            threading.Event().wait(0.01)
        archive = tmp_path / "live.tar.gz"
        made = _flask(instance, "backup", "create", str(archive))
        during = len(sent)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert made.returncode == 0, made.stderr
        assert not errors and len(sent) > during  # traffic ran before, during and after
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
        manifest = _open_archive(archive, tmp_path / "copy")
        copied = _ids(tmp_path / "copy" / "keyrelay.db")
        assert set(before) <= copied
        assert len(copied) <= len(before) + len(sent)
        secrets = {e["name"]: e["secret"] for e in manifest["entries"]}
        assert secrets == {"keyrelay.db": False, "secret.key": True}  # master key from env
        assert manifest["engine"] == "sqlite" and manifest["database_id"]
        assert "provider_keys" in manifest["schema"]

        refused = _flask(instance, "backup", "restore", str(archive))
        assert refused.returncode != 0
        assert "KeyRelay is serving from" in refused.stderr and "stop it" in refused.stderr
        assert not list(instance.glob("pre-restore-*"))
        assert http.request("GET", f"{server.url}/healthz").status == 200
    finally:
        stop.set()
        server.kill()
        http.clear()


def _instance_settings(settings: dict, instance: Path) -> dict:
    """Key files in the instance folder (no KEYRELAY_SECRET_KEY / MASTER_KEY)."""
    return {**settings, "INSTANCE_PATH": str(instance), "SECRET_KEY": None, "MASTER_KEY": None}


def _cli_app(settings: dict):
    """An app as a `flask` command has it: not marked as serving the instance."""
    app = create_app(settings)
    os.close(app.extensions.pop("serving_lock"))
    return app


def _close(app) -> None:
    app.extensions["keyrelay"].close()
    with app.app_context():
        db.engine.dispose()
    lock = app.extensions.pop("serving_lock", None)
    if lock is not None:
        os.close(lock)


def _source_backup(settings: dict, tmp_path: Path, fake) -> tuple[Path, str]:
    """A served instance with a provider key and one request, backed up; (archive, master)."""
    source = create_app(_instance_settings(settings, tmp_path / "source"))
    live = LiveServer(source)
    http = urllib3.PoolManager(retries=False)
    try:
        master = source.config["MASTER_KEY"]
        auth = {"Authorization": f"Bearer {master}"}
        key = {"name": "k", "provider": "openai", "secret": SECRET, "base_url": fake.base_url}
        assert (
            http.request("POST", f"{live.url}/api/admin/keys", json=key, headers=auth).status == 201
        )
        answer = http.request("POST", f"{live.url}/v1/chat/completions", json=chat(), headers=auth)
        assert answer.status == 200
        source.extensions["keyrelay"].books.flush()
        result = source.test_cli_runner().invoke(args=["backup", "create", str(tmp_path / "b")])
        assert result.exit_code == 0, result.output
        assert "secret files: secret.key, master_key" in result.output
        return next((tmp_path / "b").glob("keyrelay-*.tar.gz")), master
    finally:
        live.close()
        http.clear()
        _close(source)


def test_restore_into_a_fresh_instance_serves_with_the_same_keys(settings, tmp_path, fake):
    archive, master = _source_backup(settings, tmp_path, fake)
    target = tmp_path / "target"
    target_settings = _instance_settings(settings, target)
    fresh = _cli_app(target_settings)  # a new instance: its own database and key files
    own_secret_key = (target / "secret.key").read_bytes()
    try:
        result = fresh.test_cli_runner().invoke(args=["backup", "restore", str(archive)])
    finally:
        _close(fresh)
    assert result.exit_code == 0, result.output
    assert "Restored keyrelay.db, master_key, secret.key" in result.output
    aside = next(target.glob("pre-restore-*"))
    assert (aside / "secret.key").read_bytes() == own_secret_key
    assert (aside / "keyrelay.db").exists()
    for name in ("secret.key", "master_key"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600
    assert (target / "master_key").read_text().strip() == master

    app = create_app(target_settings)
    live = LiveServer(app)
    http = urllib3.PoolManager(retries=False)
    try:
        auth = {"Authorization": f"Bearer {master}"}
        keys = http.request("GET", f"{live.url}/api/admin/keys", headers=auth).json()["data"]
        assert [(k["name"], k["status"]) for k in keys] == [("k", "active")]
        answer = http.request("POST", f"{live.url}/v1/chat/completions", json=chat(), headers=auth)
        assert answer.status == 200, answer.data
        # The provider secret decrypted with the restored key file and went upstream.
        chats = [r for r in fake.requests_for(SECRET) if r.path.endswith("/chat/completions")]
        assert len(chats) == 2
        logs = http.request("GET", f"{live.url}/api/admin/logs", headers=auth).json()["data"]
        assert len(logs) == 2  # the source's request came along
    finally:
        live.close()
        http.clear()
        _close(app)


def _database_id(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT value FROM keyrelay_meta WHERE name='database_id'").fetchone()[
            0
        ]
    finally:
        conn.close()


def _repack(archive: Path, out: Path, change_db=None, change_manifest=None) -> Path:
    """A copy of the archive with its database and manifest altered (checksums updated)."""
    work = out.with_suffix(".d")
    manifest = _open_archive(archive, work)
    if change_db:
        conn = sqlite3.connect(work / "keyrelay.db")
        change_db(conn)
        conn.commit()
        conn.close()
    for entry in manifest["entries"]:
        entry["sha256"] = backup._sha256(work / entry["name"])
    if change_manifest:
        change_manifest(manifest)
    with tarfile.open(out, "w:gz") as packed:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        packed.addfile(info, io.BytesIO(data))
        for entry in manifest["entries"]:
            packed.add(work / entry["name"], arcname=entry["name"])
    return out


def test_restore_refuses_a_newer_schema_or_format_and_changes_nothing(settings, tmp_path, fake):
    archive, _ = _source_backup(settings, tmp_path, fake)
    newer = _repack(
        archive,
        tmp_path / "newer.tar.gz",
        change_db=lambda c: c.execute("ALTER TABLE provider_keys ADD COLUMN from_the_future TEXT"),
    )
    future = _repack(
        archive, tmp_path / "future.tar.gz", change_manifest=lambda m: m.update(format=99)
    )
    # A newer version's migration that changed no column a check of tables would see.
    migrated = _repack(
        archive,
        tmp_path / "migrated.tar.gz",
        change_db=lambda c: c.execute("UPDATE alembic_version SET version_num = '0099'"),
    )
    broken = _repack(
        archive,
        tmp_path / "broken.tar.gz",
        change_manifest=lambda m: m["entries"][0].update(sha256="0" * 64),
    )
    target = tmp_path / "target"
    app = _cli_app(_instance_settings(settings, target))
    database = _database_id(target / "keyrelay.db")
    try:
        runner = app.test_cli_runner()
        result = runner.invoke(args=["backup", "restore", str(newer)])
        assert result.exit_code == 1
        assert "schema version is newer than this KeyRelay's" in result.output
        assert "provider_keys.from_the_future" in result.output
        result = runner.invoke(args=["backup", "restore", str(migrated)])
        assert result.exit_code == 1
        assert "at migration 0099, which this version does not have" in result.output
        result = runner.invoke(args=["backup", "restore", str(future)])
        assert result.exit_code == 1 and "format 99" in result.output
        result = runner.invoke(args=["backup", "restore", str(broken)])
        assert result.exit_code == 1 and "does not match its checksum" in result.output
        result = runner.invoke(args=["backup", "restore", str(target / "keyrelay.db")])
        assert result.exit_code == 1 and "is not a KeyRelay backup" in result.output
        assert "Traceback" not in result.output
    finally:
        _close(app)
    assert _database_id(target / "keyrelay.db") == database  # not the backup's
    assert not list(target.glob("pre-restore-*"))
    assert not list(target.glob(".restore-*"))


def test_scheduled_backup_keeps_the_newest_n(settings, clock, tmp_path):
    folder = tmp_path / "backups"
    (folder).mkdir()
    (folder / "notes.txt").write_text("not a backup: left alone")
    app = create_app({**settings, "BACKUP_KEEP": 2, "BACKUP_DIR": str(folder)})
    try:
        job = next(j for j in scheduler.describe(app)["data"] if j["name"] == "backup")
        assert job["schedule"] == "02:30 every day, if KEYRELAY_BACKUP_KEEP"
        made = []
        for _ in range(4):
            outcome = scheduler.run_job(app, "backup")
            assert outcome["error"] is None, outcome
            made.append(Path(outcome["result"]["path"]).name)
            clock.advance(days=1)
        assert outcome["result"]["deleted"] == [made[1]]
        assert sorted(p.name for p in folder.iterdir()) == sorted([*made[2:], "notes.txt"])
    finally:
        _close(app)
    off = create_app({**settings, "INSTANCE_PATH": str(tmp_path / "other")})
    try:
        job = next(j for j in scheduler.describe(off)["data"] if j["name"] == "backup")
        assert job["schedule"] == "off" and job["next_run_at"] is None
    finally:
        _close(off)


def _postgres(tmp_path: Path) -> tuple[str, Path, Path]:
    """A throwaway PostgreSQL cluster (Debian's postgresql package) for one test: its URL.
    Skips, saying why, where the server or psycopg is missing."""
    import importlib.util

    import pytest

    bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
    if importlib.util.find_spec("psycopg") is None or bindir is None:
        pytest.skip("PostgreSQL backup test: needs psycopg and Debian's postgresql package")
    if shutil.which("pg_dump") is None or os.getuid() != 0:
        pytest.skip("PostgreSQL backup test: needs pg_dump, and root to run the cluster")
    # Not under tmp_path: pytest's folders are root's alone, and the server runs as postgres.
    data, port = Path(tempfile.mkdtemp(prefix="keyrelay-pg-")), free_port()
    shutil.chown(data, "postgres")
    start = (
        f"{bindir}/initdb -D {data}/d -U postgres --auth=trust >/dev/null && {bindir}/pg_ctl "
        f"-D {data}/d -o '-p {port} -k {data} -c listen_addresses=127.0.0.1' -l {data}/log -w start"
    )
    subprocess.run(["su", "postgres", "-c", start], check=True, capture_output=True)
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", data, bindir


def test_postgresql_backup_and_restore_with_pg_dump(settings, tmp_path):
    url, data, bindir = _postgres(tmp_path)
    try:
        app = _cli_app({**_instance_settings(settings, tmp_path / "pgi"), "DATABASE_URL": url})
        try:
            runner = app.test_cli_runner()
            add = ["keys", "add", "--name", "pgk", "--secret", SECRET, "--base-url", "http://x/v1"]
            assert runner.invoke(args=add).exit_code == 0
            made = runner.invoke(args=["backup", "create", str(tmp_path / "b")])
            assert made.exit_code == 0 and "database postgresql" in made.output, made.output
            archive = next((tmp_path / "b").glob("*"))
            assert backup.read_manifest(archive)["revision"] == schema.head()
            migrated = _repack(
                archive, tmp_path / "m.tar.gz", change_manifest=lambda m: m.update(revision="0099")
            )
            refused = runner.invoke(args=["backup", "restore", str(migrated)])
            assert refused.exit_code == 1 and "at migration 0099" in refused.output
            assert runner.invoke(args=["keys", "delete", "1"]).exit_code == 0
            result = runner.invoke(args=["backup", "restore", str(archive)])
            assert result.exit_code == 0, result.output
            assert "Restored database.dump" in result.output
        finally:
            _close(app)
        app = _cli_app({**_instance_settings(settings, tmp_path / "pgi"), "DATABASE_URL": url})
        try:
            assert "pgk" in app.test_cli_runner().invoke(args=["keys", "list"]).output
        finally:
            _close(app)
    finally:
        subprocess.run(
            ["su", "postgres", "-c", f"{bindir}/pg_ctl -D {data}/d -m immediate stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)

"""A full disk, then `kill -9`: every answer the client got is still booked at the next
start, and what could not be made durable was refused with 503 (a real tmpfs filled to
ENOSPC, a real gunicorn killed)."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
import urllib3
from cryptography.fernet import Fernet

from tests.conftest import MASTER_KEY
from tests.test_durability import Gunicorn, add_key, rows

RESERVE = 64 * 1024  # KEYRELAY_JOURNAL_RESERVE_BYTES: room for a few dozen answers


@pytest.fixture
def small_fs(tmp_path):
    """A 16 MiB tmpfs of this test's own, unmounted afterwards."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"this test mounts a tmpfs (needs root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(folder: Path) -> Path:
    """Write a file until the file system refuses with ENOSPC; returns it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1024 * 1024, 4096, 1):
            try:
                while True:
                    handle.write(b"x" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    assert os.statvfs(folder).f_bavail == 0
    return filler


def call(http: urllib3.PoolManager, server: Gunicorn, number: int):
    """One chat request (every other one streamed); the response, read whole."""
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"request {number}"}],
        "stream": number % 2 == 1,
    }
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    return http.request("POST", f"{server.url}/v1/chat/completions", json=body, headers=headers)


def test_answers_survive_a_full_disk_and_a_kill_9(small_fs, fake):
    instance, secret_key = small_fs / "instance", Fernet.generate_key().decode()
    db = instance / "keyrelay.db"
    settings = {"JOURNAL_RESERVE_BYTES": str(RESERVE)}
    server = Gunicorn(instance, secret_key, **settings)
    http = urllib3.PoolManager(retries=False)
    locker = None
    answered, refused, other = [], [], []
    try:
        assert add_key(server, fake.base_url, "sk-full-disk-0001", http) == 201
        assert call(http, server, 0).status == 200  # caches warm, journal open
        # The database cannot take the rows (its write lock is held): only the journal
        # can keep them, on a disk with no space left.
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        filler = fill(small_fs)
        for number in range(1, 151):
            response = call(http, server, number)
            request_id = response.headers.get("x-keyrelay-request-id")
            if response.status == 200:
                answered.append(request_id)
            elif response.status == 503:
                assert response.headers["Retry-After"].isdigit()
                assert response.json()["error"]["code"] == "journal_full"
                refused.append(request_id)
            else:
                other.append((response.status, response.data[:200]))
    finally:
        server.kill()
        if locker is not None:
            locker.execute("ROLLBACK")
            locker.close()
    filler.unlink()  # space again for the next start
    Gunicorn(instance, secret_key, **settings).kill()  # replays the dead worker's journal
    logged = dict(rows(db, "SELECT request_id, status_code FROM request_logs"))
    lost = [request_id for request_id in answered if logged.get(request_id) != 200]
    print(f"answered {len(answered)}, lost {len(lost)}, refused 503 {len(refused)}")
    assert other == []
    assert answered and refused  # the disk filled up while requests came
    assert lost == []
    assert len(logged) == len(set(logged))

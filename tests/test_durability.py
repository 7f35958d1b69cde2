"""Durability (F43): an answer the client got is counted even if `kill -9` follows it."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import urllib3
from cryptography.fernet import Fernet

from tests.conftest import MASTER_KEY

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """KeyRelay served as in production (gunicorn.conf.py), as a process group we can kill."""

    def __init__(self, instance: Path, secret_key: str | None, **settings: str | None) -> None:
        """`settings` are extra KEYRELAY_* values (None removes one)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "KEYRELAY_INSTANCE_PATH": str(instance),
            "KEYRELAY_MASTER_KEY": MASTER_KEY,
            "KEYRELAY_SECRET_KEY": secret_key,
            "KEYRELAY_BIND": f"127.0.0.1:{self.port}",
            "KEYRELAY_WORKERS": "1",
            **{f"KEYRELAY_{name}": value for name, value in settings.items()},
        }
        env = {name: value for name, value in env.items() if value is not None}
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self.process = subprocess.Popen(
            [str(gunicorn), "-c", "gunicorn.conf.py", "app:create_app()"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        http = urllib3.PoolManager(retries=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if http.request("GET", f"{self.url}/healthz", timeout=1).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError("gunicorn did not start")

    def kill(self) -> None:
        """SIGKILL the master and its workers: no shutdown handler runs."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def rows(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def add_key(server: Gunicorn, base_url: str, secret: str, http=urllib3) -> int:
    """Add a provider key of the upstream at `base_url` over the admin API; the status."""
    body = {"provider": "openai", "name": "k", "secret": secret, "base_url": base_url}
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    return http.request("POST", f"{server.url}/api/admin/keys", json=body, headers=headers).status


def answer(server: Gunicorn, stream: bool) -> str:
    """One chat request through the official SDK; returns KeyRelay's request id."""
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=MASTER_KEY, max_retries=0)
    messages = [{"role": "user", "content": "remember me"}]
    try:
        raw = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=messages, stream=stream
        )
        parsed = raw.parse()
        if stream:
            list(parsed)
        return raw.headers["x-keyrelay-request-id"]
    finally:
        sdk.close()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("database", ["free", "locked"])
def test_answer_is_booked_after_a_kill_9(tmp_path, fake, stream, database):
    """Killed right after answering, KeyRelay counts the answer once when it starts again.

    With the database write-locked from outside, the answer can only survive in the
    journal: the row is not in the database when the process dies.
    """
    instance, secret_key = tmp_path / "instance", Fernet.generate_key().decode()
    db = instance / "keyrelay.db"
    server = Gunicorn(instance, secret_key)
    locker = None
    try:
        assert add_key(server, fake.base_url, "sk-durable-000000000001") == 201
        if database == "locked":
            locker = sqlite3.connect(db, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")
        request_id = answer(server, stream)
        if locker is not None:
            assert rows(db, "SELECT COUNT(*) FROM request_logs") == [(0,)]
            assert list(instance.glob("journal/*.journal"))
    finally:
        server.kill()
        if locker is not None:
            locker.execute("ROLLBACK")
            locker.close()
    (usage,) = fake.usage_reported
    for _ in range(2):  # a second start finds nothing left to replay
        Gunicorn(instance, secret_key).kill()
        logged = rows(
            db,
            f"SELECT status_code, total_tokens FROM request_logs WHERE request_id = '{request_id}'",
        )
        assert logged == [(200, usage["total_tokens"])]
        assert rows(db, "SELECT SUM(total_tokens) FROM usage_daily") == [(usage["total_tokens"],)]

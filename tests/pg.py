"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` package (installed
with apt-get when missing), a cluster in a temp dir owned by the `postgres` user, a unix
socket and a free loopback port; one database per test."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from tests import installing

PG_GLOB = "/usr/lib/postgresql/*/bin"
USER = "postgres"


class Unavailable(Exception):
    """PostgreSQL cannot be installed or started here; the message says why."""


def _bin_dir() -> Path | None:
    found = sorted(glob.glob(PG_GLOB), key=lambda p: int(Path(p).parent.name))
    return Path(found[-1]) if found else None


def ensure_installed() -> Path:
    """The directory of initdb/pg_ctl, installing Debian's `postgresql` if needed (one
    installer at a time: pytest-xdist workers start their servers together)."""
    with installing.exclusive("apt"):
        return _ensure_installed()


def _ensure_installed() -> Path:
    found = _bin_dir()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable("PostgreSQL is not installed and apt-get is not usable as this user")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", *installing.APT_WAIT, "install", "-y", "postgresql"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise Unavailable(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    found = _bin_dir()
    if found is None:
        raise Unavailable(f"apt-get installed postgresql but no {PG_GLOB} appeared")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One cluster: started by start(), removed by stop()."""

    def __init__(self) -> None:
        self.bin = ensure_installed()
        self.root = Path(tempfile.mkdtemp(prefix="keyrelay-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.port = _free_port()
        self.as_user = _runner()

    def _run(self, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise Unavailable(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout)[-800:]}")

    def start(self) -> PostgresServer:
        """initdb and pg_ctl start; fsync off (a test cluster needs no durability)."""
        self.socket_dir.mkdir()
        if self.as_user:
            shutil.chown(self.root, USER)
            shutil.chown(self.socket_dir, USER)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", USER,
            "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        self.resume()
        return self

    def resume(self) -> None:
        """pg_ctl start (again, after pause())."""
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        log = self.root / "server.log"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def pause(self) -> None:
        """pg_ctl stop -m fast: sessions are ended, the server is down until resume()."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        """Stop the server at once and remove its files."""
        with contextlib.suppress(Unavailable):  # already gone
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of a database over TCP loopback."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by create_database (closing what still uses it)."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={database}"


def _runner() -> list[str]:
    """How to run the server's programs: as `postgres` when we are root (initdb refuses
    root), as ourselves otherwise."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", USER], check=True)
    return ["runuser", "-u", USER, "--"]


@contextlib.contextmanager
def running(unavailable: Callable[[str], NoReturn]) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server (installed if missing), stopped afterwards; when none
    can start, `unavailable` is called with why (pytest.skip or pytest.fail)."""
    try:
        server = PostgresServer().start()
    except Unavailable as exc:
        unavailable(f"PostgreSQL unavailable: {exc}")
    try:
        yield server
    finally:
        server.stop()

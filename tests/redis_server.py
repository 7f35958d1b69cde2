"""A throwaway redis-server for the tests: Debian's package, installed when missing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests import installing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_binary() -> str:
    """The path of redis-server, installed with apt-get if missing (one installer at a
    time); skips (saying why) where it cannot be installed."""
    with installing.exclusive("apt"):
        return _redis_binary()


def _redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found:
        return found
    apt = ["apt-get", *installing.APT_WAIT, "install", "-y", "-q", "redis-server"]
    if shutil.which("apt-get") is None:
        pytest.skip("redis-server is not installed and there is no apt-get to install it")
    if shutil.which("sudo") and subprocess.run(["id", "-u"], capture_output=True).stdout != b"0\n":
        apt = ["sudo", "-n", *apt]
    done = subprocess.run(apt, capture_output=True, text=True, timeout=600)
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        pytest.skip(f"redis-server could not be installed with apt-get: {done.stderr[-300:]}")
    return found


class RedisServer:
    """redis-server on a free loopback port, no persistence, in a temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.binary, self.folder = redis_binary(), folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start (or start again, on the same port, with nothing in it)."""
        self.process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.folder), "--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

"""gunicorn.conf.py's defaults hold thousands of open streams: enough connections per
worker, and an open-file limit that lets a worker have them."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import urllib3
from cryptography.fernet import Fernet

import config
from tests.conftest import MASTER_KEY
from tests.test_durability import ROOT, free_port


def test_two_default_workers_take_ten_thousand_connections():
    settings = config.from_environment({})
    assert settings["WORKERS"] * settings["WORKER_CONNECTIONS"] >= 10_000


def test_workers_may_open_as_many_files_as_the_hard_limit_allows(tmp_path):
    """Started under the usual soft limit of 1024 open files (a worker could then hold
    ~500 streams), the workers run with the soft limit raised to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = min(1024, hard)
    port = free_port()
    env = {
        **os.environ,
        "KEYRELAY_INSTANCE_PATH": str(tmp_path / "instance"),
        "KEYRELAY_MASTER_KEY": MASTER_KEY,
        "KEYRELAY_SECRET_KEY": Fernet.generate_key().decode(),
        "KEYRELAY_BIND": f"127.0.0.1:{port}",
        "KEYRELAY_WORKERS": "1",
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "-c", "gunicorn.conf.py", "app:create_app()"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/healthz")
        workers = _children(process.pid)
        assert workers
        for pid in [process.pid, *workers]:
            assert _open_file_limits(pid) == (hard, hard)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib3.request("GET", url, timeout=1, retries=False).status == 200:
                return
        except urllib3.exceptions.HTTPError:
            time.sleep(0.1)
    raise AssertionError("gunicorn did not start")


def _children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (gunicorn's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry))
    return found


def _open_file_limits(pid: int) -> tuple[int, int]:
    """(soft, hard) open-file limit of a process, as the kernel reports it."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    return soft, hard

"""The README's run command as a new user meets it: a fresh copy of the checkout, a new
virtualenv with the runtime dependencies only (no test extra), `./start.sh`, then the
gateway answers. The virtualenv is made by the Dockerfile's build step, run as written
(`scripts/install.sh`, which start.sh runs too), so the image's build cannot drift from
the run command. pytest pulls in packages (`packaging`) that the server needs too, so a
suite run inside the test venv alone would hide a missing runtime dependency."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import urllib3

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 600.0  # the first start installs every dependency into a new venv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fresh_copy(target: Path) -> None:
    """What `git clone` of this checkout gives (tracked and new, not ignored, files),
    including changes not committed yet, so the test checks the tree under test."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        if not source.is_file():
            continue  # deleted in the work tree but still in the index
        dest = target / os.fsdecode(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)


def _clean_env(port: int) -> dict[str, str]:
    """The environment of a new user's shell: no venv of ours, no KEYRELAY_* overrides."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEYRELAY_", "VIRTUAL_ENV", "PYTHON")) and k != "PYTEST_CURRENT_TEST"
    }
    bin_dir = str(Path(sys.executable).parent)
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join(parts)
    env["KEYRELAY_BIND"] = f"127.0.0.1:{port}"
    return env


def dockerfile_install_step(dockerfile: Path) -> str:
    """The Dockerfile's one RUN that installs KeyRelay (continuation lines joined)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    runs = [line[4:].strip() for line in text.splitlines() if line.startswith("RUN ")]
    installs = [run for run in runs if "install.sh" in run]
    assert len(installs) == 1, runs
    return installs[0]


def test_start_sh_serves_from_a_fresh_clone_with_runtime_dependencies_only(tmp_path):
    checkout = tmp_path / "keyrelay"
    _fresh_copy(checkout)
    assert not (checkout / ".venv").exists()
    assert not (checkout / "instance" / "keyrelay.db").exists()
    port = _free_port()
    # The image's build step, in the clean checkout (WORKDIR /app), with no venv of ours.
    step = dockerfile_install_step(checkout / "Dockerfile")
    assert step == "./scripts/install.sh"
    assert "scripts/install.sh" in (checkout / "start.sh").read_text()
    built = subprocess.run(
        ["sh", "-c", step], cwd=checkout, env=_clean_env(port), capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout + built.stderr
    log = open(tmp_path / "start.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        ["./start.sh"],
        cwd=checkout,
        env=_clean_env(port),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    http = urllib3.PoolManager(retries=False, timeout=5.0)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        health = None
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "start.log").read_text()[-4000:]
            try:
                health = http.request("GET", f"http://127.0.0.1:{port}/healthz")
                if health.status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.5)
        output = (tmp_path / "start.log").read_text()
        assert health is not None and health.status == 200, output[-4000:]
        # start.sh found the venv the build step made and installed nothing again.
        assert "Installing KeyRelay" not in output, output[-4000:]
        # The venv is the runtime one: the test extra was not installed.
        venv_bin = checkout / ".venv" / "bin"
        assert (venv_bin / "gunicorn").exists()
        assert not (venv_bin / "pytest").exists()
        assert not (venv_bin / "ruff").exists()
        # Both workers boot and serve: several answers, no worker failing to start.
        master = (checkout / "instance" / "master_key").read_text().strip()
        assert master in output  # printed once, at first start
        for _ in range(6):
            models = http.request(
                "GET",
                f"http://127.0.0.1:{port}/v1/models",
                headers={"Authorization": f"Bearer {master}"},
            )
            assert models.status == 200, models.data
            assert models.json() == {"object": "list", "data": []}
        unauthorised = http.request("GET", f"http://127.0.0.1:{port}/v1/models")
        assert unauthorised.status == 401
        assert "Worker failed to boot" not in output and "Traceback" not in output, output
    finally:
        http.clear()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()

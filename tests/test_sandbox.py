"""What a CLI run can read of the worker that starts it: its own environment holds no
secret setting, and a sealed worker's /proc/<pid>/environ (which keeps the environment the
process started with) cannot be read by a process of the same user."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import sandbox
from tests.conftest import MASTER_KEY

ROOT = Path(__file__).resolve().parent.parent
SECRET = "kr-env-master-key-do-not-leak-1234"

# The worker: loads gateway/sandbox.py by path (stdlib only), seals itself or not, then
# starts a child of the same user that tries to read the worker's environment.
WORKER = """
import importlib.util, json, os, subprocess, sys
spec = importlib.util.spec_from_file_location("sandbox", sys.argv[1])
sandbox = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sandbox)
if sys.argv[2] == "seal":
    sandbox.seal()
child = subprocess.run(
    ["cat", f"/proc/{os.getpid()}/environ"], capture_output=True, env={"PATH": "/usr/bin:/bin"}
)
print(json.dumps({
    "child_read_it": child.returncode == 0 and sys.argv[3].encode() in child.stdout,
    "child_refused": child.returncode != 0,
    "in_environ": os.environ.get("KEYRELAY_MASTER_KEY") == sys.argv[3],
    "dumpable": sandbox.dumpable(),
}))
"""


def _unprivileged():
    """Run as `nobody` when the tests run as root (root reads every /proc file anyway:
    the guarantee is for the unprivileged user KeyRelay runs as)."""
    if os.getuid() != 0:
        return sys.executable, None

    def drop() -> None:
        os.setgid(65534)
        os.setgroups([])
        os.setuid(65534)

    return "/usr/bin/python3", drop  # the system one: a root-only venv is not runnable


def _worker(mode: str) -> dict:
    python, drop = _unprivileged()
    env = {"PATH": "/usr/bin:/bin", "KEYRELAY_MASTER_KEY": SECRET, "KEYRELAY_BIND": "x"}
    done = subprocess.run(
        [python, "-c", WORKER, str(ROOT / "gateway" / "sandbox.py"), mode, SECRET],
        env=env,
        cwd="/",
        preexec_fn=drop,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's")
def test_a_sealed_worker_keeps_its_environment_from_its_children():
    # Unsealed (the control): a child of the same user reads the worker's secret.
    assert _worker("plain") == {
        "child_read_it": True,
        "child_refused": False,
        "in_environ": True,
        "dumpable": True,
    }
    # Sealed: gone from os.environ, and /proc/<pid>/environ (which still holds it) refused.
    assert _worker("seal") == {
        "child_read_it": False,
        "child_refused": True,
        "in_environ": False,
        "dumpable": False,
    }


def test_forget_secrets_takes_only_the_secret_settings():
    environ = {f"KEYRELAY_{name}": "s" for name in sandbox.SECRET_SETTINGS}
    environ.update(KEYRELAY_BIND="0.0.0.0:8000", PATH="/usr/bin")
    gone = sandbox.forget_secrets(environ)
    assert sorted(gone) == sorted(f"KEYRELAY_{name}" for name in sandbox.SECRET_SETTINGS)
    assert environ == {"KEYRELAY_BIND": "0.0.0.0:8000", "PATH": "/usr/bin"}


def test_gunicorn_seals_its_master_and_workers():
    """The hooks that call it (gunicorn reads them from this file)."""
    text = (ROOT / "gunicorn.conf.py").read_text()
    hooks = {
        name: text.split(f"def {name}(", 1)[1].split("\ndef ", 1)[0]
        for name in ("post_worker_init", "on_starting")
    }
    assert "sandbox.seal()" in hooks["post_worker_init"]
    assert "sandbox.close_proc_files()" in hooks["on_starting"]


def test_a_cli_run_gets_no_secret_of_the_worker(admin, client, tmp_path, monkeypatch):
    """A stand-in CLI (a shell script speaking Claude Code's stream-json) writes down the
    environment it was given, while the worker's own holds every secret setting."""
    for name in sandbox.SECRET_SETTINGS:
        monkeypatch.setenv(f"KEYRELAY_{name}", f"{SECRET}-{name}")
    monkeypatch.setenv("OPENAI_API_KEY", f"{SECRET}-openai")
    seen = tmp_path / "env"
    script = tmp_path / "fake-claude"
    script.write_text(
        "#!/bin/sh\n"
        f"env > {seen}\n"
        'echo \'{"type":"result","subtype":"success","is_error":false,"result":"ok",'
        '"usage":{"input_tokens":1,"output_tokens":1}}\'\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    body = {
        "provider": "claude_code",
        "name": "fake",
        "secret": "sk-ant-api03-sandboxaaaaaaaaaaaaaaaa",
        "options": {"command": str(script)},
    }
    assert admin.call("POST", "/keys", body).status == 201
    answer = client.chat.completions.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "ok"
    given = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert SECRET not in seen.read_text() and MASTER_KEY not in seen.read_text()
    assert not [name for name in given if name.startswith("KEYRELAY_")]
    assert given["ANTHROPIC_API_KEY"] == body["secret"]  # its own credential only

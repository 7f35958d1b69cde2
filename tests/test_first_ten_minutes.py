"""A new user's first ten minutes, in a fresh shell (no virtualenv activated, no KEYRELAY_*
variables, the venv's bin not on PATH): the README's commands run as printed against a
clone-like copy of the checkout, `./kr` from any folder, `.env` and `./start.sh --port`
choosing the port, Alembic quiet.

The copy borrows the test virtualenv (its own `.venv` folder whose `bin` and `lib` are
links to it) instead of installing one: tests/test_fresh_start.py covers the install."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

import urllib3

from tests.cli_clients import codex_exec
from tests.conftest import MODELS
from tests.fake_upstream import FakeUpstream
from tests.test_fresh_start import _free_port, _fresh_copy

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV = Path(sys.prefix).resolve()
START_TIMEOUT = 120.0
SECRET = "sk-readme-upstream-0000000000001"


def _fresh_shell(home: Path) -> dict[str, str]:
    """A new user's shell: no venv active or on PATH, no KEYRELAY_* or PYTHON* variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEYRELAY_", "VIRTUAL_ENV", "PYTHON")) and k != "PYTEST_CURRENT_TEST"
    }
    parts = env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in parts if p and not p.rstrip("/").endswith(".venv/bin"))
    env["HOME"] = str(home)
    home.mkdir(exist_ok=True)
    return env


def _checkout(tmp_path: Path) -> Path:
    """A clone-like copy of this tree with a venv that is installed already (borrowed)."""
    checkout = tmp_path / "keyrelay"
    _fresh_copy(checkout)
    venv = checkout / ".venv"
    venv.mkdir()
    shutil.copy2(VENV / "pyvenv.cfg", venv / "pyvenv.cfg")
    for name in ("bin", "lib", "lib64", "include"):
        if (VENV / name).exists():
            (venv / name).symlink_to(VENV / name)
    (venv / ".installed").touch()  # newer than pyproject.toml: start.sh installs nothing
    return checkout


def _blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of one language, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def _commands(block: str) -> list[str]:
    """A bash block's commands, comments and continuation lines joined."""
    joined = block.replace("\\\n", " ")
    lines = (re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@contextmanager
def _serving(command: list[str], checkout: Path, env: dict, port: int, log: Path):
    """Run `command` (start.sh) in the checkout until /healthz answers on `port`; stop it
    (its process group) afterwards. Yields the start's output so far."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        http = urllib3.PoolManager(retries=False, timeout=5.0)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                assert process.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                try:
                    if http.request("GET", f"http://127.0.0.1:{port}/healthz").status == 200:
                        break
                except urllib3.exceptions.HTTPError:
                    time.sleep(0.25)  # a process starting: nothing to wait on but its port
            yield log.read_text()
        finally:
            http.clear()
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def test_the_readme_commands_work_as_printed(tmp_path):
    """Every ```bash block of the README, run as printed in a fresh shell, with this
    machine's port and a fake upstream in place of api.openai.com; then its SDK snippets.
    The port comes from `.env` (KEYRELAY_BIND), so `./start.sh` as printed shows that too."""
    readme = README.read_text()
    checkout = _checkout(tmp_path)
    env = _fresh_shell(tmp_path / "home")
    port = _free_port()
    # One worker: what the test needs, at half the start-up CPU.
    (checkout / ".env").write_text(f"KEYRELAY_BIND=127.0.0.1:{port}\nKEYRELAY_WORKERS=1\n")
    with FakeUpstream(models=MODELS) as fake:
        here = {
            "127.0.0.1:8080": f"127.0.0.1:{port}",
            "https://api.openai.com/v1": fake.base_url,
            "sk-your-openai-key": SECRET,
        }

        def as_here(text: str) -> str:
            for printed, local in here.items():
                text = text.replace(printed, local)
            return text

        commands = [c for block in _blocks(readme, "bash") for c in _commands(block)]
        assert commands[:2] == ["./start.sh", "./test.sh"], commands
        # ./test.sh is this suite itself; everything else runs.
        script = "\n".join(
            ["set -euo pipefail", *map(as_here, commands[2:]), 'echo; echo "KEY=$KEY"']
        )
        with _serving(["./start.sh"], checkout, env, port, tmp_path / "start.log") as banner:
            master = (checkout / "instance" / "master_key").read_text().strip()
            assert master in banner  # the first start shows it in full, once
            assert f"http://127.0.0.1:{port}/v1" in banner
            assert "Context impl" not in banner and "Traceback" not in banner
            ran = subprocess.run(
                ["bash", "-c", script],
                cwd=checkout,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert ran.returncode == 0, ran.stdout + ran.stderr
            out = ran.stdout
            assert "Added key #1 main" in out and "tested   #1: ok, 2 models" in out
            assert re.search(r"^admin\s+admin$", out, re.MULTILINE), out
            assert "Usage: kr [OPTIONS] COMMAND" in out
            assert '"object":"chat.completion"' in out.replace(" ", ""), out
            assert "Context impl" not in ran.stderr and "INFO" not in ran.stderr, ran.stderr
            key = re.search(r"^KEY=(kr-\S+)$", out, re.MULTILINE).group(1)
            for snippet in _blocks(readme, "python"):
                code = as_here(snippet).replace("kr-your-client-key", key)
                answer = subprocess.run(
                    [str(checkout / ".venv" / "bin" / "python"), "-c", code],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert answer.returncode == 0, snippet + answer.stderr
                assert answer.stdout.strip(), snippet
    assert len(_blocks(readme, "python")) == 2  # the OpenAI and the Anthropic SDK


def test_the_readme_points_claude_code_and_codex_where_their_tests_do():
    """Claude Code and Codex are run for real by test_claude_code.py and test_codex.py;
    the README configures them the same way: Anthropic's base URL without /v1, Codex's
    model provider with /v1 and the Responses API."""
    readme = README.read_text()
    (claude,) = _blocks(readme, "shell")
    assert re.search(r"ANTHROPIC_BASE_URL=http://127\.0\.0\.1:8080 ", claude), claude
    assert "ANTHROPIC_AUTH_TOKEN=kr-your-client-key" in claude and claude.split()[-1] == "claude"
    (toml,) = _blocks(readme, "toml")
    codex = tomllib.loads(toml)
    assert codex["model_provider"] == "keyrelay"
    tested = codex_exec("codex", "http://127.0.0.1:8080/v1", "KEYRELAY_KEY", "m", "p")
    provider = tomllib.loads(tested[tested.index("-c", 5) + 1])
    assert codex["model_providers"] == provider["model_providers"]
    assert "KEYRELAY_KEY=kr-your-client-key codex" in readme


def test_start_sh_host_and_port_flags_win_over_env_file(tmp_path):
    checkout = _checkout(tmp_path)
    env = _fresh_shell(tmp_path / "home")
    in_file, asked = _free_port(), _free_port()
    (checkout / ".env").write_text(f"KEYRELAY_BIND=127.0.0.1:{in_file}\nKEYRELAY_WORKERS=1\n")
    command = ["./start.sh", "--host", "localhost", "--port", str(asked)]
    with _serving(command, checkout, env, asked, tmp_path / "start.log") as banner:
        assert f"URL:          http://localhost:{asked}" in banner
    bad = subprocess.run(
        ["./start.sh", "--port", "eighty"], cwd=checkout, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--port needs a number" in bad.stderr


def test_gunicorn_conf_reads_the_env_file_and_the_environment_wins(tmp_path):
    """gunicorn.conf.py takes KEYRELAY_BIND / KEYRELAY_WORKERS from .env (beside config.py)."""
    for name in ("config.py", "gunicorn.conf.py"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".env").write_text("KEYRELAY_BIND=127.0.0.1:45999\nKEYRELAY_WORKERS=3\n")
    env = _fresh_shell(tmp_path / "home") | {"PYTHONPATH": str(tmp_path)}
    gunicorn = [str(VENV / "bin" / "gunicorn"), "-c", "gunicorn.conf.py", "--print-config"]

    def printed(**extra: str) -> dict[str, str]:
        run = subprocess.run(
            [*gunicorn, "app:create_app()"],
            cwd=tmp_path,
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        return dict(re.findall(r"^(\w+)\s+= (.*)$", run.stdout, re.MULTILINE))

    from_file = printed()
    assert from_file["bind"] == "['127.0.0.1:45999']" and from_file["workers"] == "3"
    assert printed(KEYRELAY_WORKERS="5")["workers"] == "5"


def test_kr_works_from_any_folder_in_a_fresh_shell_and_keeps_alembic_quiet(tmp_path):
    env = _fresh_shell(tmp_path / "home") | {"KEYRELAY_INSTANCE_PATH": str(tmp_path / "inst")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def kr(*args: str) -> subprocess.CompletedProcess:
        run = subprocess.run(
            [str(ROOT / "kr"), *args], cwd=elsewhere, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout + run.stderr
        return run

    first = kr("users", "list")
    assert re.search(r"^admin\s+admin$", first.stdout, re.MULTILINE)
    # A migration that runs says so in one line; Alembic's own lines stay quiet.
    assert "database upgraded from empty to" in first.stderr
    assert "Context impl" not in first.stderr and "Running upgrade" not in first.stderr
    again = kr("users", "list")
    assert "INFO" not in again.stderr, again.stderr
    assert "Context impl" in kr("-v", "users", "list").stderr


def test_kr_without_a_venv_says_what_to_do(tmp_path):
    shutil.copy2(ROOT / "kr", tmp_path / "kr")
    env = _fresh_shell(tmp_path / "home")
    run = subprocess.run([str(tmp_path / "kr"), "users", "list"], env=env, capture_output=True)
    assert run.returncode == 1
    assert b"not installed" in run.stderr and b"start.sh once" in run.stderr

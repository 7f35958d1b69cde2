"""Running the real CLI clients (Claude Code, Codex) as their tests do: each in a home and
a working folder of its own, with only the environment it is given, pointed at KeyRelay
or at a fake upstream."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# What keeps Claude Code from calling anyone but its API (telemetry, updates).
QUIET_CLAUDE = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}


def folders(tmp_path: Path, prefix: str = "") -> tuple[Path, Path]:
    """A home and a working folder for one run (made here)."""
    home, work = tmp_path / f"{prefix}home", tmp_path / f"{prefix}work"
    home.mkdir()
    work.mkdir()
    return home, work


def run_cli(command: list, home: Path, work: Path, **env: str) -> subprocess.CompletedProcess:
    """Run a CLI to its end (two minutes at most) with PATH, HOME and `env` only."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **env}
    return subprocess.run(
        [str(part) for part in command],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def claude_code_env(base_url: str, **auth: str) -> dict[str, str]:
    """Claude Code's environment: its API at `base_url`, with the credential in `auth`."""
    return {"ANTHROPIC_BASE_URL": base_url, **auth, **QUIET_CLAUDE}


def codex_exec(
    binary, base_url: str, env_key: str, model: str, prompt: str, provider: str = "keyrelay"
) -> list:
    """`codex exec` with one model provider speaking the Responses API at `base_url`."""
    label = "KeyRelay" if provider == "keyrelay" else provider
    config = (
        f'model_providers.{provider}={{name="{label}", base_url="{base_url}", '
        f'env_key="{env_key}", wire_api="responses"}}'
    )
    return [binary, "exec", "--skip-git-repo-check", "-c", f"model_provider={provider}"] + [
        "-c", config, "-m", model, prompt,
    ]  # fmt: skip


def cli_client_key(admin, fake, secret: str, name: str) -> dict:
    """A key of the fake upstream in the pool, and a client key for the CLI to call with."""
    admin.add_key(secret, fake.base_url)
    created = admin.call("POST", "/client-keys", {"name": name, "rpm_limit": 50})
    assert created.status == 201
    return created.json()

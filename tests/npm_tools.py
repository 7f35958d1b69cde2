"""The coding-agent CLIs the tests run for real, installed from the npm registry when
missing: `@anthropic-ai/claude-code` and `@openai/codex` (native binaries shipped inside
registry packages). Installed once per machine under ~/.cache/keyrelay-tests/, pinned, so a run is
repeatable and a second run costs nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CACHE = Path.home() / ".cache" / "keyrelay-tests"
CLAUDE_CODE = ("@anthropic-ai/claude-code", "2.1.332", "claude")
CODEX = ("@openai/codex", "0.171.0", "codex")


def ensure(package: str, version: str, binary: str) -> Path:
    """The path of the package's binary, installing the package first if it is not there."""
    prefix = CACHE / f"{package.replace('/', '+')}@{version}"
    path = prefix / "node_modules" / ".bin" / binary
    if os.access(path, os.X_OK):
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is needed to install {package}: install Node.js and npm")
    prefix.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund"]
    done = subprocess.run(
        [*command, f"{package}@{version}"], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0 or not os.access(path, os.X_OK):
        raise RuntimeError(f"npm install {package}@{version} failed:\n{done.stderr[-2000:]}")
    return path


def claude_code() -> Path:
    return ensure(*CLAUDE_CODE)


def codex() -> Path:
    return ensure(*CODEX)

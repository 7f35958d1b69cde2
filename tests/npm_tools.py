"""The npm packages the tests run for real, installed from the npm registry when missing:
the coding-agent CLIs `@anthropic-ai/claude-code` and `@openai/codex` (native binaries shipped
inside registry packages) and the OpenID Connect provider `oidc-provider` (a library, run by
tests/oidc/provider.mjs). Installed once per machine under ~/.cache/keyrelay-tests/, pinned,
so a run is repeatable and a second run costs nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests import installing

CACHE = Path.home() / ".cache" / "keyrelay-tests"
CLAUDE_CODE = ("@anthropic-ai/claude-code", "2.1.332", "claude")
CODEX = ("@openai/codex", "0.171.0", "codex")
OIDC_PROVIDER = ("oidc-provider", "9.13.3", "lib/index.js")


def ensure(package: str, version: str, binary: str) -> Path:
    """The path of the package's binary, installing the package first if it is not there."""
    prefix = CACHE / f"{package.replace('/', '+')}@{version}"
    return _installed(package, version, prefix, prefix / "node_modules" / ".bin" / binary, os.X_OK)


def ensure_module(package: str, version: str, entry: str) -> Path:
    """The path of a file in a library package (its entry), installing it if it is not there."""
    prefix = CACHE / f"{package.replace('/', '+')}@{version}"
    return _installed(package, version, prefix, prefix / "node_modules" / package / entry, os.R_OK)


def _installed(package: str, version: str, prefix: Path, path: Path, mode: int) -> Path:
    # Under the lock: a second test process waits for the first one's install to finish
    # rather than finding a half-installed package (or installing it again beside it).
    with installing.exclusive(prefix.name):
        return _install(package, version, prefix, path, mode)


def _install(package: str, version: str, prefix: Path, path: Path, mode: int) -> Path:
    if os.access(path, mode):
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is needed to install {package}: install Node.js and npm")
    prefix.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund"]
    done = subprocess.run(
        [*command, f"{package}@{version}"], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0 or not os.access(path, mode):
        raise RuntimeError(f"npm install {package}@{version} failed:\n{done.stderr[-2000:]}")
    return path


def claude_code() -> Path:
    return ensure(*CLAUDE_CODE)


def codex() -> Path:
    return ensure(*CODEX)


def oidc_provider() -> Path:
    return ensure_module(*OIDC_PROVIDER)

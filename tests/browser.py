"""Headless Chromium for the dashboard tests: Debian's `chromium`, driven by Playwright.

The browser is installed by the test setup when it is missing (CI runs as root on a fresh
machine: `apt-get install -y chromium`); Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests import installing

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"


def ensure_chromium() -> str:
    """The path of Debian's Chromium, installing the package first if it is not there (one
    installer at a time)."""
    with installing.exclusive("apt"):
        return _ensure_chromium()


def _ensure_chromium() -> str:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise RuntimeError(
            f"{CHROMIUM} is missing and cannot be installed here (needs root and apt-get): "
            "run `apt-get install -y chromium`."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, *installing.APT_WAIT, "install", "-y", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([apt, "update"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    return CHROMIUM


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/screenshots/ (looked at by people)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

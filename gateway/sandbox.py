"""What the programs a worker starts (the CLI providers' runs) cannot read of it.

A run gets only the environment CliRun hands it (no KEYRELAY_* variable). Beyond that, a
served process (gunicorn's master and workers) is sealed at start: the secret settings
leave its environment once the app has read them, so nothing started later inherits
them, and the process is made non-dumpable, so its /proc/<pid>/environ, mem and maps
(which keep the environment the process was started with, whatever os.environ says now)
belong to root and another process of the same user cannot read them. A process running
as root is not protected by the latter: root reads every process's /proc files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import MutableMapping

# KEYRELAY_* settings that hold a secret or a credential (a URL may carry a password).
SECRET_SETTINGS = (
    "MASTER_KEY",
    "SECRET_KEY",
    "DATABASE_URL",
    "ADMIN_PASSWORD",
    "FALLBACK_KEY",
    "PAYSTACK_SECRET",
    "OIDC_CLIENT_SECRET",
    "ALERT_WEBHOOK_URL",
    "METRICS_TOKEN",
    "REDIS_URL",
)
_PR_SET_DUMPABLE, _PR_GET_DUMPABLE = 4, 3


def forget_secrets(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Take the secret settings out of the environment (read once at start); their names."""
    gone = [f"KEYRELAY_{name}" for name in SECRET_SETTINGS if f"KEYRELAY_{name}" in environ]
    for name in gone:
        del environ[name]
    return gone


def _prctl():
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    return ctypes.CDLL(path, use_errno=True).prctl


def close_proc_files() -> bool:
    """Make this process non-dumpable (Linux): its /proc files are root's from now on, and
    the children it forks stay so until they exec. False where that is not possible."""
    prctl = _prctl()
    if prctl is None:
        return False
    return prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


def dumpable() -> bool | None:
    """Whether other processes of this user may read this process's /proc files."""
    prctl = _prctl()
    return None if prctl is None else bool(prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))


def seal() -> None:
    """Both: after the app has read its settings (a gunicorn worker, once loaded)."""
    forget_secrets()
    close_proc_files()

"""One run of a coding-agent CLI: its own process group, started in an empty temporary
working directory with its own temporary home and only the environment it is given, a
deadline after which the whole group is killed, and JSON lines read as they come.

`close()` ends the run however it went (answer read, client gone, error): the process
group is killed and the temporary directories are deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading

import orjson

from gateway.policy import Outcome
from gateway.providers.transport import TransportError

PREFIX = "keyrelay-cli-"
# What is left of the gateway's own environment for the child: nothing secret.
PASSED_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
)
_KEYLIKE = re.compile(r"\b(sk|key|token)[-_][A-Za-z0-9_\-]{8,}", re.IGNORECASE)


class CliRun:
    """A started CLI process; iterate `events()`, then `close()`."""

    def __init__(self, argv: list[str], env: dict[str, str], stdin: str, timeout: float,
                 secret: str, files: dict[str, bytes] | None = None) -> None:  # fmt: skip
        self.secret = secret
        self.timed_out = False
        self._closed = False
        self._stderr = self.proc = self._timer = None
        self.root = tempfile.mkdtemp(prefix=PREFIX)
        try:
            for name, data in (files or {}).items():  # beside the working directory
                with open(os.path.join(self.root, name), "wb") as file:
                    file.write(data)
            self._spawn(argv, env, stdin, timeout)
        except BaseException:  # whatever failed, no process or run folder is left behind
            if self._timer is not None:
                self._timer.cancel()
            if self.proc is not None:
                self._kill()
            self._remove()
            raise

    def _spawn(self, argv: list[str], env: dict[str, str], stdin: str, timeout: float) -> None:
        self.work = os.path.join(self.root, "work")
        self.home = os.path.join(self.root, "home")
        os.mkdir(self.work)
        os.mkdir(self.home)
        child_env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        child_env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        child_env.update({"HOME": self.home, "TMPDIR": self.root})
        child_env.update(env)
        self._stderr = open(os.path.join(self.root, "stderr"), "w+b")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                argv, cwd=self.work, env=child_env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._stderr, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise TransportError(
                Outcome.CONNECTION_ERROR, f"cannot run {argv[0]}: {exc.strerror or exc}"
            ) from None
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()
        try:
            self.proc.stdin.write(stdin.encode())
            self.proc.stdin.close()
        except OSError:
            pass  # the CLI exited (or was killed) before reading: its output says why

    def events(self):
        """The CLI's JSON objects, one a line, as it prints them (other lines skipped)."""
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith(b"{"):
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                yield event

    def broke(self, name: str) -> TransportError:
        """Why the output ended without the CLI's final event (after it ended)."""
        if self.timed_out:
            return TransportError(Outcome.TIMEOUT, f"{name} did not finish in time; killed")
        code = self._exit_code()
        detail = self.stderr_tail()
        return TransportError(
            Outcome.SERVER_ERROR,
            f"{name} exited with status {code} without an answer"
            + (f": {detail}" if detail else ""),
        )

    def scrub(self, text: str) -> str:
        """The text without the secret (in any of its forms: gateway/keys/scrub.py) or anything
        shaped like a key."""
        from gateway.keys.scrub import scrubber  # the one scrubber of every provider kind

        if self.secret:
            text = scrubber(self.secret).text(text)
            text = text.replace(self.secret, "***")  # even a secret too short for the forms
        return _KEYLIKE.sub(lambda m: m.group(0)[:6] + "***", text)

    def stderr_tail(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.flush()
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 2000))
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            return self.scrub(" | ".join(lines[-5:]))[-500:]
        return ""

    def close(self) -> None:
        """Kill the process group (whatever is left of it) and delete the directories."""
        if self._closed:
            return
        self._closed = True
        self._timer.cancel()
        self._kill()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self._stderr):
            with contextlib.suppress(OSError):
                stream.close()
        self._remove()

    def _exit_code(self) -> int | None:
        try:
            return self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None

    def _expire(self) -> None:
        self.timed_out = True
        self._kill()

    def _kill(self) -> None:
        # The CLI's own children (helpers, shells) are in its group: all of them go.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _remove(self) -> None:
        if self._stderr is not None:
            with contextlib.suppress(OSError):
                self._stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)

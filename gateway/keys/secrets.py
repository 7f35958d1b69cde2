"""Provider secrets at rest: Fernet encryption, masking, fingerprints and key files."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

# How long a reader waits for a key file another process is still writing (or one an
# older version left half-written) before refusing to start.
KEY_FILE_WAIT = 2.0
# Keyed fingerprints of provider secrets start with this; older rows (plain SHA-256 hex)
# are recomputed at start (keyring.check_stored_secrets).
FINGERPRINT_PREFIX = "h1:"
_FINGERPRINT_LABEL = b"keyrelay provider-secret fingerprint v1"
UNREADABLE_MESSAGE = (
    "cannot decrypt a provider secret: KEYRELAY_SECRET_KEY differs from the key it was stored with"
)


class SecretUnreadable(ValueError):
    """A provider secret this instance's secret key cannot decrypt."""


# Vendor prefixes such as `sk-`, `sk-or-v1-`, `sk-proj-`, `sk-ant-api03-`: short lowercase segments.
_PREFIX = re.compile(r"^[a-z]{2,5}[-_](?:[a-z0-9]{1,6}[-_]){0,2}")


def mask(secret: str) -> str:
    """Show a secret's vendor prefix and four characters at each end: `sk-or-v1-1234…abcd`."""
    match = _PREFIX.match(secret)
    prefix = match.group(0) if match else ""
    rest = secret[len(prefix) :]
    if len(rest) < 16:
        # Too short to show 8 of its characters without giving most of it away.
        return f"{prefix}…{rest[-2:]}" if len(rest) >= 8 else f"{prefix}…"
    return f"{prefix}{rest[:4]}…{rest[-4:]}"


def token_hash(token: str) -> str:
    """Plain SHA-256 hex of a high-entropy random token (client keys: 256 random bits, so a
    fast unkeyed hash is enough). Not for provider secrets: see SecretBox.fingerprint."""
    return hashlib.sha256(token.encode()).hexdigest()


def _fernet_key(material: str) -> bytes:
    """Use a Fernet key as is; stretch any other passphrase into one."""
    try:
        Fernet(material.encode())
        return material.encode()
    except ValueError:
        digest = hashlib.pbkdf2_hmac("sha256", material.encode(), b"keyrelay-secrets", 200_000)
        return base64.urlsafe_b64encode(digest)


@functools.cache
def empty_passphrase_fernet() -> Fernet:
    """The Fernet an empty passphrase gives: what a worker that read an empty key file
    (before the key files were written atomically) encrypted with. Computed once."""
    return Fernet(_fernet_key(""))


def fernet_key_problem(text: str) -> str | None:
    """What is wrong with the content of a secret key file, or None."""
    if not text:
        return "is empty"
    try:
        Fernet(text.encode())
    except ValueError:
        return "does not hold a Fernet key (44 characters of URL-safe base64)"
    return None


def load_or_create_key_file(path: Path) -> str:
    """The instance's Fernet key in `path` (mode 0600), generated on first start."""
    return load_or_create(
        Path(path),
        lambda: Fernet.generate_key().decode(),
        fernet_key_problem,
        "If no provider key was saved yet, delete the file to generate a new key; otherwise "
        "restore it from a backup, or set KEYRELAY_SECRET_KEY to the key it held.",
    )


def load_or_create(
    path: Path, generate: Callable[[], str], problem: Callable[[str], str | None], remedy: str
) -> str:
    """Read a key file, creating it on first start; safe with many processes at once.

    The new key is written to a temporary file in the same folder, synced, then hard-linked
    to `path`: the name appears only with the whole key behind it, and an existing file is
    never replaced (the process that loses the race reads the winner's key). A reader never
    accepts an empty or malformed key: it waits up to KEY_FILE_WAIT seconds for it to become
    whole, then refuses to start (SystemExit naming the file and what is wrong).
    """
    if not path.exists():
        key = generate()
        if _publish(path, key + "\n"):
            return key
    return _read_key(path, problem, remedy)


def _publish(path: Path, content: str) -> bool:
    """Create `path` holding `content` (0600) atomically; False if it exists already."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp creates it 0600
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write
            if not _publish_exclusive(path, content):
                return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _fsync_directory(path.parent)
    return True


def _publish_exclusive(path: Path, content: str) -> bool:
    """The fallback: readers may see the file before it is whole, and wait for it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _fsync_directory(folder: Path) -> None:
    """Make the new name durable (a crash right after start must not lose the key)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the file itself is synced
    finally:
        os.close(fd)


def _read_key(path: Path, problem: Callable[[str], str | None], remedy: str) -> str:
    deadline = time.monotonic() + KEY_FILE_WAIT
    while True:
        try:
            text = path.read_text().strip()
            issue = problem(text)
        except FileNotFoundError:
            text, issue = "", "is missing (it was deleted while KeyRelay started)"
        except (OSError, UnicodeDecodeError) as exc:
            text, issue = "", f"cannot be read ({exc})"
        if issue is None:
            return text
        if time.monotonic() >= deadline:
            raise SystemExit(f"KeyRelay cannot start: the key file {path} {issue}. {remedy}")
        time.sleep(0.05)


class SecretBox:
    """Encrypts and decrypts provider secrets with one Fernet key."""

    def __init__(self, material: str) -> None:
        if not material or not material.strip():
            raise ValueError("the secret key is empty: provider secrets would not be protected")
        key = _fernet_key(material)
        self._fernet = Fernet(key)
        # A key of its own for fingerprints, derived from the secret key with a fixed label.
        self._fingerprint_key = hmac.new(key, _FINGERPRINT_LABEL, hashlib.sha256).digest()

    def encrypt(self, secret: str) -> bytes:
        """Ciphertext for the database."""
        return self._fernet.encrypt(secret.encode())

    def decrypt(self, token: bytes) -> str:
        """The plain secret, for the upstream call only; SecretUnreadable if this key
        cannot decrypt it."""
        try:
            return self._fernet.decrypt(token).decode()
        except (InvalidToken, TypeError, UnicodeDecodeError):
            raise SecretUnreadable(UNREADABLE_MESSAGE) from None

    def fingerprint(self, secret: str) -> str:
        """A keyed hash (HMAC-SHA256) of a provider secret, to refuse duplicates without
        decrypting every key; without the secret key, a leaked database does not let anyone
        confirm a guessed secret. 46 characters."""
        digest = hmac.new(self._fingerprint_key, secret.encode(), hashlib.sha256).digest()
        return FINGERPRINT_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

"""Provider secrets at rest: Fernet encryption, masking and fingerprints."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

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


def fingerprint(secret: str) -> str:
    """A stable SHA-256 of the secret, to find duplicates without decrypting."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _fernet_key(material: str) -> bytes:
    """Use a Fernet key as is; stretch any other passphrase into one."""
    try:
        Fernet(material.encode())
        return material.encode()
    except ValueError:
        digest = hashlib.pbkdf2_hmac("sha256", material.encode(), b"keyrelay-secrets", 200_000)
        return base64.urlsafe_b64encode(digest)


def load_or_create_key_file(path: Path) -> str:
    """Read the instance key file, creating it with mode 0600 on first run."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        key = Fernet.generate_key().decode()
        handle.write(key + "\n")
    return key


class SecretBox:
    """Encrypts and decrypts provider secrets with one Fernet key."""

    def __init__(self, material: str) -> None:
        self._fernet = Fernet(_fernet_key(material))

    def encrypt(self, secret: str) -> bytes:
        """Ciphertext for the database."""
        return self._fernet.encrypt(secret.encode())

    def decrypt(self, token: bytes) -> str:
        """The plain secret, for the upstream call only."""
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise ValueError(
                "cannot decrypt a provider secret: KEYRELAY_SECRET_KEY differs from the key "
                "it was stored with"
            ) from None

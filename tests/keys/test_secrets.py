"""Secrets at rest (F62): masking, encryption, the key file."""

from __future__ import annotations

import stat

import pytest

from gateway.keys.secrets import SecretBox, load_or_create_key_file, mask


@pytest.mark.parametrize(
    ("secret", "masked"),
    [
        ("sk-or-v1-1234567890abcdef1234567890abcd", "sk-or-v1-1234…abcd"),
        ("sk-proj-Ab-Cd_EfGhIjKlMnOpQrStUv", "sk-proj-Ab-C…StUv"),
        ("AIzaSyA1234567890abcdefgh", "AIza…efgh"),
        ("sk-shortsecret", "sk-…et"),
        ("tiny", "…"),
    ],
)
def test_mask(secret, masked):
    assert mask(secret) == masked


def test_round_trip_and_wrong_key():
    box = SecretBox("a passphrase")
    token = box.encrypt("sk-secret")
    assert b"sk-secret" not in token
    assert box.decrypt(token) == "sk-secret"
    with pytest.raises(ValueError, match="KEYRELAY_SECRET_KEY"):
        SecretBox("another passphrase").decrypt(token)


def test_key_file_is_created_once_with_0600(tmp_path):
    path = tmp_path / "secret.key"
    first = load_or_create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key_file(path) == first
    assert SecretBox(first).decrypt(SecretBox(first).encrypt("x")) == "x"

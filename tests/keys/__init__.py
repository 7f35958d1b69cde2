"""Tests of gateway/keys/: key selection, catalog, client keys, secrets."""

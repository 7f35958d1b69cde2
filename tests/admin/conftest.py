"""Fixtures for the admin command tests: a command context on the test app, caches that
would stay stale for an hour unless a command makes them re-read, and audit rows."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from extensions import db
from gateway import routes
from gateway.admin.context import Admin
from gateway.keys import client_keys as clientkeys
from gateway.proxy import candidates
from models import AuditEntry


@pytest.fixture
def long_caches(app, monkeypatch):
    """Every proxy cache keeps what it read for an hour: only a command's invalidation
    makes the next request see a change (no race with the usual one-second expiry)."""
    app.extensions["keyrelay"].keys.ttl = 3600
    monkeypatch.setattr(clientkeys, "CACHE_SECONDS", 3600)
    monkeypatch.setattr(routes, "CACHE_SECONDS", 3600)
    monkeypatch.setattr(candidates, "PROFILE_CACHE_SECONDS", 3600)


@pytest.fixture
def admin_ctx(app, server, long_caches):
    """A command context (actor `tester`) inside the app, beside the live server."""
    with app.app_context():
        yield Admin(db.session, app.extensions["keyrelay"], "tester", "127.0.0.1")
        db.session.remove()


def audits(ctx: Admin, action: str) -> list[AuditEntry]:
    """The audit rows of one action (committed ones: read in a fresh transaction)."""
    ctx.session.rollback()
    return list(ctx.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))

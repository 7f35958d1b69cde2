"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from extensions import db

bp = Blueprint("system", __name__)


@bp.get("/healthz")
def healthz():
    """Alive."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready when the database answers."""
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any database failure means not ready
        return jsonify({"status": "unavailable", "database": "unreachable"}), 503
    return jsonify({"status": "ok", "database": "ok"})

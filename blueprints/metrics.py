"""GET /metrics: Prometheus metrics, for the master key or KEYRELAY_METRICS_TOKEN."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, abort, current_app, jsonify

from blueprints.common import bearer_token, gateway

bp = Blueprint("metrics", __name__)


def _allowed(token: str | None) -> bool:
    """The token is the metrics token or the master key (compared in constant time)."""
    if not token:
        return False
    config = current_app.config
    accepted = [config["MASTER_KEY"], config["METRICS_TOKEN"]]
    return any(hmac.compare_digest(token.encode(), a.encode()) for a in accepted if a)


@bp.get("/metrics")
def scrape():
    """The Prometheus text exposition of every worker's counters and the gauges read now."""
    if not current_app.config["METRICS"]:
        abort(404)
    if not _allowed(bearer_token()):
        body = {
            "error": {
                "message": "Send 'Authorization: Bearer <token>' with the metrics token "
                "(KEYRELAY_METRICS_TOKEN) or the master key.",
                "type": "authentication_error",
            }
        }
        return jsonify(body), 401, {"WWW-Authenticate": 'Bearer realm="metrics"'}
    from gateway import prometheus

    payload, content_type = prometheus.exposition(gateway())
    return Response(payload, content_type=content_type)

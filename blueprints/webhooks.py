"""Payment webhooks (F35): `POST /api/webhooks/paystack`.

No login and no CSRF token: the caller is Paystack's server, and the signature over the
raw body (gateway/ledger/credits.py) is the authentication.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from blueprints.common import gateway
from extensions import db
from gateway.admin import payments
from gateway.admin.context import Admin
from gateway.errors import GatewayError
from gateway.ledger import credits

bp = Blueprint("webhooks", __name__)


@bp.post("/paystack")
def paystack():
    """Verify, credit once per transaction reference, answer 200 to what is done."""
    secret = current_app.config["PAYSTACK_SECRET"]
    if not secret:
        raise GatewayError(
            503,
            "Payments are not configured: set KEYRELAY_PAYSTACK_SECRET.",
            type="server_error",
            code="payments_not_configured",
        )
    body = request.get_data(cache=False)
    if not credits.verify(secret, body, request.headers.get("x-paystack-signature")):
        raise GatewayError(
            401,
            "Invalid or missing x-paystack-signature.",
            type="authentication_error",
            code="invalid_signature",
        )
    micros_per_unit = current_app.config["PAYSTACK_MICROS_PER_UNIT"]
    command = Admin(db.session, gateway(), "paystack", request.remote_addr)
    try:
        outcome = payments.receive(command, body, micros_per_unit)
    except credits.PayloadError as exc:
        raise GatewayError(400, str(exc), code="invalid_payload") from None
    return jsonify(outcome.body())

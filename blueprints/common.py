"""Helpers shared by the blueprints: the gateway, bearer auth, OpenAI-shaped errors."""

from __future__ import annotations

import hmac

from flask import Response, current_app, json, request

from gateway.dialects.anthropic_messages import error_json as anthropic_error
from gateway.errors import GatewayError
from gateway.service import Gateway

ANTHROPIC_PATHS = ("/messages", "/messages/count_tokens")


def gateway() -> Gateway:
    """The app's Gateway."""
    return current_app.extensions["keyrelay"]


def utcnow():
    """The gateway clock's now (tests move it)."""
    return gateway().clock.now()


def budgets_changed() -> None:
    """After committing a credit or top-up: this process's proxy and budget alerts use the
    new budget at once (other workers within their one-second cache)."""
    gateway().callers.forget()
    if gateway().alerts is not None:
        gateway().alerts.forget()


def client_key_defaults() -> dict[str, int | None]:
    """Limits of a new client key that names none (KEYRELAY_CLIENT_KEY_*; 0: unlimited)."""
    config = current_app.config
    return {
        "rpm_limit": config["CLIENT_KEY_RPM"] or None,
        "tpm_limit": config["CLIENT_KEY_TPM"] or None,
        "max_parallel_requests": config["CLIENT_KEY_MAX_PARALLEL"] or None,
    }


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer …` header (or `x-api-key`), if any."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key")


def require_master_key() -> None:
    """401 unless the request carries the master key."""
    token = bearer_token()
    if not token:
        raise GatewayError(
            401,
            "Missing API key. Send 'Authorization: Bearer <key>'.",
            type="authentication_error",
            code="missing_api_key",
        )
    if not hmac.compare_digest(token.encode(), current_app.config["MASTER_KEY"].encode()):
        raise GatewayError(
            401,
            "Invalid API key. Use the KeyRelay master key (KEYRELAY_MASTER_KEY).",
            type="authentication_error",
            code="invalid_api_key",
        )


def error_response(error: GatewayError) -> Response:
    """The error JSON in the dialect of the path (Anthropic's on `/messages`, OpenAI's
    elsewhere) with the error's status and headers."""
    body = error.body()
    if request.path.endswith(ANTHROPIC_PATHS) and request.path.startswith(("/v1/", "/api/v1/")):
        body = anthropic_error(error.status, error.message)
    response = Response(json.dumps(body), error.status, mimetype="application/json")
    response.headers.update(error.headers)
    return response


def key_health(now, profile: str | None = None) -> list:
    """The keys as the dashboard shows them: status with its reason (times in the zone,
    unlabelled: the page names the zone), every limit (RPM/TPM windows from the shared
    limiter), failures."""
    from extensions import db
    from gateway.jobs import scheduler
    from gateway.keys import states
    from gateway.ledger import reports

    second = int(now.timestamp())
    return reports.key_health(
        db.session,
        now,
        profile,
        windows=lambda scope: gateway().limiter.window(scope, second),
        threshold=current_app.config.get("FAILURE_THRESHOLD"),
        when=states.local_time,
        retest_at=scheduler.next_run_at(current_app, "key-revalidation"),
    )

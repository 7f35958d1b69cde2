"""The dashboard's playground: send a chat through a chosen profile, model or key and watch
the answer stream in, then the request's attempts. Viewers see the page; sending (which
spends like any request) needs an admin."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, render_template, request
from sqlalchemy import select

from blueprints.common import error_response, gateway
from blueprints.dashboard import _log_labels
from blueprints.web import guard, no_cache, register_csrf_error
from extensions import db
from gateway import playground
from gateway.errors import GatewayError
from gateway.keys.client_keys import MASTER
from models import Profile, ProviderKey, RequestLog

bp = Blueprint("playground", __name__)
bp.before_request(guard)
bp.after_request(no_cache)
register_csrf_error(bp)


@bp.get("/playground")
def page():
    profiles = list(db.session.scalars(select(Profile.name).order_by(Profile.name)))
    keys = db.session.execute(
        select(ProviderKey.id, ProviderKey.name, ProviderKey.provider, Profile.name)
        .join(Profile, Profile.id == ProviderKey.profile_id)
        .order_by(ProviderKey.id)
    ).all()
    models = sorted({m["id"] for name in profiles for m in gateway().catalog.models(name, MASTER)})
    return render_template(
        "playground.html",
        profiles=profiles,
        keys=keys,
        models=models,
        limits={"message": playground.MAX_MESSAGE_CHARS, "max_tokens": playground.MAX_TOKENS},
    )


@bp.post("/playground/send")
def send():
    """The proxy's answer as it comes (SSE when streamed), with its request id header; a
    400 `{"errors": {field: message}}` naming every bad field at once."""
    ask, errors = playground.check(db.session, request.form)
    if errors:
        return jsonify({"errors": errors}), 400
    try:
        result = playground.send(gateway(), ask)
    except GatewayError as error:
        return error_response(error)
    if result.chunks is not None:
        return Response(result.chunks, result.status, result.headers, direct_passthrough=True)
    return Response(result.body, result.status, result.headers)


@bp.get("/playground/attempts/<request_id>")
def attempts(request_id: str):
    """The attempts of a request the playground sent (as the request page shows them)."""
    gateway().books.flush()
    row = db.session.scalar(select(RequestLog).where(RequestLog.request_id == request_id))
    if row is None:
        abort(404)
    return render_template("partials/attempts.html", row=row, **_log_labels())

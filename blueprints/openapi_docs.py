"""The admin API's OpenAPI document (`/api/admin/openapi.json`) and a page that renders
it (`/api/admin/docs`, Swagger UI from static/vendor). Both are public: they describe
the API's shapes, never its data; every call they describe needs the master key."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template

from gateway.admin import openapi

bp = Blueprint("openapi", __name__)
PREFIX = "/api/admin"
SWAGGER_UI = "swagger-ui-5.35.0"


def admin_rules(app) -> list[tuple[str, str, list[str], str]]:
    """(rule, endpoint, methods, docstring) of every route under /api/admin."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        doc = (app.view_functions[rule.endpoint].__doc__ or "").strip()
        found.append((rule.rule, rule.endpoint, methods, " ".join(doc.split())))
    return found


@bp.get("/openapi.json")
def document():
    """This document: the admin API as OpenAPI 3.0."""
    cached = current_app.extensions.get("keyrelay.openapi")
    if cached is None:
        cached = openapi.document(admin_rules(current_app), "1")
        current_app.extensions["keyrelay.openapi"] = cached
    return jsonify(cached)


@bp.get("/docs")
def docs_page():
    """The document rendered by Swagger UI (vendored; no CDN, CSP-clean)."""
    return render_template("openapi_docs.html", swagger_ui=SWAGGER_UI)

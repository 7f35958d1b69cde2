"""The OpenAI-compatible proxy: /v1/chat/completions and /v1/models (also under /api/v1)."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, jsonify, request

from blueprints.common import gateway, require_master_key
from gateway.errors import invalid_request
from gateway.service import ProxyResponse
from models import DEFAULT_PROFILE

bp = Blueprint("proxy", __name__)


@bp.before_request
def authenticate() -> None:
    """Every proxy call needs the master key (client keys come later)."""
    require_master_key()


def _profile() -> str:
    return request.headers.get("X-Profile") or DEFAULT_PROFILE


def _json_body() -> object:
    """The parsed body; 400 when it is not JSON (413 when too large, raised by Flask)."""
    data = request.get_data(cache=False)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"The request body is not valid JSON ({exc}).") from None


def _to_flask(result: ProxyResponse) -> Response:
    if result.chunks is not None:
        return Response(result.chunks, result.status, result.headers, direct_passthrough=True)
    return Response(result.body, result.status, result.headers)


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """Chat completion, streamed (SSE) or not, from the profile's key pool."""
    return _to_flask(gateway().chat(_profile(), _json_body()))


@bp.get("/models")
def list_models() -> Response:
    """Models the caller's profile serves."""
    return jsonify({"object": "list", "data": gateway().models(_profile())})


@bp.get("/models/<path:model_id>")
def get_model(model_id: str) -> Response:
    """One model, or 404."""
    return jsonify(gateway().model(_profile(), model_id))

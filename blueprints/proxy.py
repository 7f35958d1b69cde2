"""The OpenAI-compatible proxy: /v1/chat/completions and /v1/models (also under /api/v1)."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from blueprints.common import bearer_token, gateway
from gateway import validation
from gateway.errors import GatewayError, invalid_request
from gateway.proxy import client_headers
from gateway.proxy.relay import ProxyResponse
from models import DEFAULT_PROFILE

bp = Blueprint("proxy", __name__)


@bp.before_request
def authenticate() -> None:
    """The master key, or a client key (401 unknown, revoked or expired)."""
    g.caller = gateway().callers.resolve(bearer_token())


def _profile() -> str:
    """The client key's profile; the master key picks one with X-Profile (F8)."""
    asked = request.headers.get("X-Profile")
    own = g.caller.profile
    if own is None:
        return asked or DEFAULT_PROFILE
    if asked and asked != own:
        raise GatewayError(
            403,
            f"This API key belongs to profile '{own}'; it cannot use profile '{asked}'.",
            type="permission_error",
            code="profile_not_allowed",
        )
    return own


def _json_body() -> object:
    """The parsed body; 400 when it is not JSON (413 when too large, raised by Flask)."""
    data = request.get_data(cache=False)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if validation.is_too_deep(exc):
            raise validation.too_deep() from None
        raise invalid_request(f"The request body is not valid JSON ({exc}).") from None
    validation.check_depth(body)  # deeper would fail later, serialising it (a 500)
    return body


def _serve(dialect: str, profile: str, body: object) -> Response:
    """One request of a dialect, with the client headers KeyRelay reads."""
    return _to_flask(gateway().serve(dialect, profile, body, g.caller, g.client_headers))


def _to_flask(result: ProxyResponse) -> Response:
    if result.chunks is not None:
        return Response(result.chunks, result.status, result.headers, direct_passthrough=True)
    return Response(result.body, result.status, result.headers)


class _EnvironHeaders:
    """The request's headers by name, looked up in the WSGI environ: werkzeug's
    `request.headers.getlist` walks every header of the request for each name asked."""

    __slots__ = ("environ",)

    def __init__(self, environ: dict) -> None:
        self.environ = environ

    def getlist(self, name: str) -> list[str]:
        """The header's value as a list (a WSGI server joins a repeated header in one)."""
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        return [] if value is None else [value]


def _read(endpoint: str) -> tuple[str, object]:
    """The profile and the parsed body of a call that spends tokens. A call refused here
    (a profile it may not use, a body too large or not JSON) is booked like any other,
    so that every authenticated call to such an endpoint has one log row."""
    profile = None
    try:
        profile = _profile()
        # a bad one is booked
        g.client_headers = client_headers.read(_EnvironHeaders(request.environ))
        return profile, _json_body()
    except RequestEntityTooLarge:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        err = GatewayError(
            413,
            f"The request body is larger than the {limit} bytes allowed (KEYRELAY_MAX_BODY_BYTES).",
            code="request_too_large",
        )
    except GatewayError as exc:
        err = exc
    gateway().refuse(endpoint, profile, g.caller, err)
    raise err


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """Chat completion, streamed (SSE) or not, from the profile's key pool."""
    profile, body = _read("chat.completions")
    return _serve("openai_chat", profile, body)


@bp.post("/embeddings")
def embeddings() -> Response:
    """Embeddings (strings or token ids; float or base64) from the profile's key pool."""
    profile, body = _read("embeddings")
    return _serve("openai_embeddings", profile, body)


@bp.post("/completions")
def completions() -> Response:
    """Legacy text completions, streamed or not, from the profile's key pool."""
    profile, body = _read("completions")
    return _serve("openai_completions", profile, body)


@bp.post("/responses")
def responses() -> Response:
    """The Responses API (`responses.create`, the Codex CLI), streamed or not, translated
    for chat-completions upstreams."""
    profile, body = _read("responses")
    return _serve("openai_responses", profile, body)


@bp.get("/responses/<response_id>")
def get_response(response_id: str) -> Response:
    """A stored response (made with `store` not false) of this caller: KeyRelay's own, or
    asked of the upstream that holds it (a passthrough response)."""
    status, body = gateway().held.get(response_id, g.caller.client_key_id)
    return Response(body, status, {"Content-Type": "application/json"})


@bp.delete("/responses/<response_id>")
def delete_response(response_id: str) -> Response:
    """Delete a stored response of this caller (here, or on the upstream that holds it)."""
    status, body = gateway().held.delete(response_id, g.caller.client_key_id)
    return Response(body, status, {"Content-Type": "application/json"})


@bp.post("/messages")
def messages() -> Response:
    """Anthropic Messages (the Anthropic SDK, Claude Code), streamed or not, from the same
    key pool; `?beta=true` and `anthropic-version` / `anthropic-beta` headers are accepted
    as they come (unknown beta flags are never an error; `anthropic-beta` goes on to
    Anthropic keys)."""
    profile, body = _read("messages")
    return _serve("anthropic_messages", profile, body)


@bp.post("/messages/count_tokens")
def count_tokens() -> Response:
    """The prompt's tokens, counted locally (no upstream call, nothing booked)."""
    _profile()
    counted = gateway().dialects["anthropic_messages"].count_tokens(_json_body())
    return jsonify({"input_tokens": counted})


@bp.get("/models")
def list_models() -> Response:
    """Models the caller's profile serves."""
    return jsonify({"object": "list", "data": gateway().catalog.models(_profile(), g.caller)})


@bp.get("/models/<path:model_id>")
def get_model(model_id: str) -> Response:
    """One model, or 404."""
    return jsonify(gateway().catalog.model(_profile(), model_id, g.caller))

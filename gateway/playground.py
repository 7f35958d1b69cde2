"""The dashboard's playground: one chat sent through the proxy exactly as a client's would
go (admission, selection, fail-over, booking), as the master key, through a chosen profile
and model, optionally with a chosen provider key tried first. The request is logged and
costs what any request costs; its attempts are read back from the request log."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from gateway.keys.client_keys import MASTER
from gateway.proxy.relay import ProxyResponse
from gateway.validation import MAX_SQL_INT
from models import Profile, ProviderKey

MAX_MESSAGE_CHARS = 32_000
MAX_MODEL_CHARS = 200
MAX_TOKENS = 8192
# The session header the pin is read from (gateway/proxy/client_headers.py).
SESSION_HEADER = "session-id"
_DIGITS = re.compile(r"[0-9]{1,19}")


@dataclass
class Ask:
    """A checked playground request."""

    profile: str
    model: str
    message: str
    system: str
    key_id: int | None
    stream: bool
    max_tokens: int | None


def check(session, form) -> tuple[Ask | None, dict[str, str]]:
    """The request from the form's fields, or every bad field with its message at once."""
    errors: dict[str, str] = {}
    profile = (form.get("profile") or "").strip()
    profile_id = session.scalar(select(Profile.id).where(Profile.name == profile))
    if profile_id is None:
        errors["profile"] = "Choose one of the profiles."
    model = (form.get("model") or "").strip()
    if not model:
        errors["model"] = "Give a model id (or a route's name), as clients send it."
    elif len(model) > MAX_MODEL_CHARS:
        errors["model"] = f"A model id is at most {MAX_MODEL_CHARS} characters."
    message = form.get("message") or ""
    if not message.strip():
        errors["message"] = "Write a message to send."
    elif len(message) > MAX_MESSAGE_CHARS:
        errors["message"] = f"At most {MAX_MESSAGE_CHARS:,} characters."
    system = form.get("system") or ""
    if len(system) > MAX_MESSAGE_CHARS:
        errors["system"] = f"At most {MAX_MESSAGE_CHARS:,} characters."
    key_id = _key(session, form.get("key"), profile_id, errors)
    max_tokens = _max_tokens(form.get("max_tokens"), errors)
    if errors:
        return None, errors
    stream = (form.get("stream") or "") in ("on", "true", "1")
    return Ask(profile, model, message, system, key_id, stream, max_tokens), {}


def _key(session, raw, profile_id, errors: dict) -> int | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    # ASCII digits only ("²".isdigit() is true), and an id a row can have.
    key_id = int(raw) if _DIGITS.fullmatch(raw) and int(raw) <= MAX_SQL_INT else None
    found = session.get(ProviderKey, key_id) if key_id is not None else None
    if found is None:
        errors["key"] = "Choose one of the provider keys, or any key."
    elif profile_id is not None and found.profile_id != profile_id:
        errors["key"] = f"Key #{key_id} is not in this profile: choose one of its keys."
    return key_id


def _max_tokens(raw, errors: dict) -> int | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_TOKENS:
        errors["max_tokens"] = f"A whole number from 1 to {MAX_TOKENS}, or empty."
        return None
    return int(raw)


def send(gateway, ask: Ask) -> ProxyResponse:
    """Serve the chat through the proxy as the master key (GatewayError as any client's)."""
    messages = [{"role": "system", "content": ask.system}] if ask.system.strip() else []
    messages.append({"role": "user", "content": ask.message})
    body: dict = {"model": ask.model, "messages": messages, "stream": ask.stream}
    if ask.stream:
        body["stream_options"] = {"include_usage": True}
    if ask.max_tokens is not None:
        body["max_tokens"] = ask.max_tokens
    headers = {}
    if ask.key_id is not None:  # a session of its own, pinned to the chosen key
        session = f"playground-{secrets.token_hex(8)}"
        gateway.pins.prefer(session, MASTER.client_key_id, ask.key_id)
        headers[SESSION_HEADER] = session
    return gateway.serve("openai_chat", ask.profile, body, MASTER, headers)

"""Pins: a conversation goes to the provider key that holds its state.

A response made by a Responses-API upstream (passthrough) lives on that upstream's
account: a request that continues it (`previous_response_id`) goes to that key and to no
other, and `GET /v1/responses/{id}` asks it. A client's session (`prompt_cache_key`, Claude
Code's or Codex's session header, else Anthropic's `metadata.user_id`) prefers the key
that served it last, whose prompt cache holds its prefix; the pin moves only when another
key had to serve it (the pinned one was unavailable or failed over). Pins are rows of
`conversation_pins`, shared by every worker and host, deleted with the request log."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from datetime import datetime, timedelta

import orjson
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.dialects.base import ProxyRequest, sse_data
from gateway.errors import GatewayError, database_down
from gateway.keys.catalog import OUT_OF_SERVICE
from gateway.providers.base import UpstreamReply
from gateway.proxy.client_headers import SESSION_HEADERS
from gateway.responses_store import ResponseStore
from gateway.store import KeyRow
from models import ConversationPin, ProviderKey

RESPONSES = "openai_responses"
ANTHROPIC = "anthropic"
# Session pins this process remembers without asking the database again.
CACHED_SESSIONS = 10_000
table = ConversationPin.__table__
keys_table = ProviderKey.__table__
# A response's id in the first bytes of a stream (`response.created`).
_CREATED_ID = re.compile(rb'"response"\s*:\s*\{\s*"id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')
log = logging.getLogger(__name__)


class Pins:
    """Reads and moves the pins of the requests the proxy serves."""

    def __init__(self, engine: Engine, clock) -> None:
        self.engine, self.clock = engine, clock
        self._sessions: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    # -- before the attempts ----------------------------------------------------------

    def order(self, request: ProxyRequest, keys: list[KeyRow], client_key_id) -> list[KeyRow]:
        """The keys to try: only the one that holds the response the request continues;
        else the one its session is pinned to first, the others in the strategy's order."""
        held = self._held(request, client_key_id)
        if held is not None:
            kept = [key for key in keys if key.id == held]
            if not kept:
                raise self._holder_gone(previous_response(request), held)
            return kept
        scope = session_scope(request, client_key_id)
        pinned = self._session_key(scope) if scope else None
        request.extra["pin_session"] = pinned  # read once: `served` compares with it
        if pinned is None or not keys or keys[0].id == pinned:
            return keys
        first = [key for key in keys if key.id == pinned]
        return first + [key for key in keys if key.id != pinned] if first else keys

    def check(self, request: ProxyRequest, client_key_id, profile_id: int, profile: str) -> None:
        """Refuse at once (400) a request continuing a response whose key the caller's pool
        cannot reach for good: in another profile, deleted, or out of service. A key that
        is only busy or cooling down now is left to the attempts (503 if it stays so)."""
        held = self._held(request, client_key_id)
        if not held:  # no pin, or the environment fallback key's (id 0, in every profile)
            return
        row = self._key_state(held)
        if row is False:  # the database is down: the attempts decide, served unpinned
            return
        asked = previous_response(request)
        if row is None:
            raise _holder_deleted(asked, held)
        if row.profile_id != profile_id:
            raise _holder_elsewhere(asked, held, profile)
        expired = row.expires_at is not None and row.expires_at <= self.clock.now()
        status = "expired" if expired else row.status
        if status in OUT_OF_SERVICE:
            raise _holder_out_of_service(asked, held, status)

    def _key_state(self, key_id: int):
        """The key's profile, status and expiry; None if deleted, False if unreadable."""
        query = select(keys_table.c.profile_id, keys_table.c.status, keys_table.c.expires_at)
        try:
            with self.engine.connect() as conn:
                return conn.execute(query.where(keys_table.c.id == key_id)).first()
        except Exception as exc:
            if not database_down(exc):
                raise
            return False

    def _held(self, request: ProxyRequest, client_key_id) -> int | None:
        """The key that holds the response the request continues (None: no pin)."""
        asked = previous_response(request)
        if asked is None:
            return None
        if "pin_held" not in request.extra:  # once per request, whatever its hops
            request.extra["pin_held"] = self._read(RESPONSE + asked)
        row = request.extra["pin_held"]
        if row is None:
            return None
        if client_key_id is not None and row.client_key_id != client_key_id:
            raise ResponseStore.not_found(asked)
        return row.provider_key_id

    def _holder_gone(self, response_id: str, key_id: int) -> GatewayError:
        """Why the key holding the response cannot take the request: deleted, or out."""
        with self.engine.connect() as conn:
            there = conn.scalar(select(keys_table.c.id).where(keys_table.c.id == key_id))
        if there is None:
            return _holder_deleted(response_id, key_id)
        return _holder_unavailable(response_id, key_id)

    def _session_key(self, scope: str) -> int | None:
        with self._lock:
            if scope in self._sessions:
                self._sessions.move_to_end(scope)
                return self._sessions[scope]
        row = self._read(scope)
        if row is not None:
            self._remember(scope, row.provider_key_id)
        return row.provider_key_id if row is not None else None

    def prefer(self, session: str, client_key_id, key_id: int) -> None:
        """Pin a session to a key before its first request (the dashboard's playground:
        the key the admin chose is tried first; others follow if it cannot serve)."""
        scope = _session_scope(session, client_key_id)
        self._write(scope, key_id, client_key_id)
        self._remember(scope, key_id)

    # -- after the attempts ------------------------------------------------------------

    def served(self, request: ProxyRequest, key: KeyRow, reply: UpstreamReply, client_key_id):
        """Pin what the answer made: the response the upstream now holds, the session to
        the key that served it (moved only when another key served it)."""
        if reply.status >= 300:
            return
        made = upstream_response_id(request, reply)
        if made is not None:
            self._write(RESPONSE + made, key.id, client_key_id)
        scope = session_scope(request, client_key_id)
        if scope is None:
            return
        before = request.extra.get("pin_session")  # as `order` read it
        if "pin_session" not in request.extra:
            before = self._session_key(scope)
        if before != key.id:
            self._remember(scope, key.id)
            self._write(scope, key.id, client_key_id)

    # -- GET /v1/responses/{id} --------------------------------------------------------

    def holder(self, response_id: str, client_key_id) -> int | None:
        """The key that holds a passthrough response this caller made (None: none)."""
        row = self._read(RESPONSE + response_id) if len(response_id) <= 64 else None
        if row is None or (client_key_id is not None and row.client_key_id != client_key_id):
            return None
        return row.provider_key_id

    def forget_response(self, response_id: str) -> None:
        """Drop a response's pin (the upstream deleted it)."""
        with self.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.scope == RESPONSE + response_id))

    def prune(self, now: datetime, days: int) -> int:
        """Delete pins not used for `days`; how many."""
        with self.engine.begin() as conn:
            gone = conn.execute(
                delete(table).where(table.c.updated_at < now - timedelta(days=days))
            )
        return gone.rowcount or 0

    # -- storage -----------------------------------------------------------------------

    def _remember(self, scope: str, key_id: int) -> None:
        with self._lock:
            self._sessions[scope] = key_id
            self._sessions.move_to_end(scope)
            while len(self._sessions) > CACHED_SESSIONS:
                self._sessions.popitem(last=False)

    def _read(self, scope: str):
        """The pin's row, or None (also when the database is down: served unpinned)."""
        try:
            with self.engine.connect() as conn:
                query = select(table.c.provider_key_id, table.c.client_key_id)
                return conn.execute(query.where(table.c.scope == scope)).first()
        except Exception as exc:
            if not database_down(exc):
                raise
            log.warning("conversation pin unread (database down): %s", exc)
            return None

    def _write(self, scope: str, key_id: int, client_key_id) -> None:
        values = {"provider_key_id": key_id, "updated_at": self.clock.now()}
        try:
            with self.engine.begin() as conn:
                moved = conn.execute(update(table).where(table.c.scope == scope).values(values))
                if not moved.rowcount:
                    conn.execute(
                        insert(table).values(scope=scope, client_key_id=client_key_id, **values)
                    )
        except IntegrityError:
            pass  # another worker pinned it at the same moment: its pin stands
        except Exception as exc:
            if not database_down(exc):
                raise
            log.warning("conversation pin not written (database down): %s", exc)


RESPONSE = "response:"
SESSION = "session:"


def previous_response(request: ProxyRequest) -> str | None:
    """The upstream's response a Responses request continues, if it is not KeyRelay's."""
    if request.native is None or request.native[0] != RESPONSES:
        return None
    asked = request.native[1].get("previous_response_id")
    return asked if isinstance(asked, str) and asked else None


def session_id(request: ProxyRequest) -> str | None:
    """The client's session: `prompt_cache_key` in its body, a session header, or the
    `metadata.user_id` of an Anthropic body (Claude Code puts its session id in it)."""
    body = request.native[1] if request.native is not None else request.body
    asked = body.get("prompt_cache_key")
    if asked is None and request.typed is not None:  # its own body set aside (pruned)
        asked = request.typed.prompt_cache_key
    if isinstance(asked, str) and asked:
        return asked
    for name in SESSION_HEADERS:
        if request.headers.get(name):
            return request.headers[name]
    if request.native is not None and request.native[0] == ANTHROPIC:
        metadata = body.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
        return user if isinstance(user, str) and user else None
    return None


def session_scope(request: ProxyRequest, client_key_id) -> str | None:
    """The pin's name of the request's session, per client key (None: no session)."""
    session = session_id(request)
    return None if session is None else _session_scope(session, client_key_id)


def _session_scope(session: str, client_key_id) -> str:
    digest = hashlib.sha256(f"{client_key_id}\x00{session}".encode()).hexdigest()
    return SESSION + digest


def upstream_response_id(request: ProxyRequest, reply: UpstreamReply) -> str | None:
    """The id of the response a Responses-API upstream made and keeps (not with `store:
    false`): from its body, or from a stream's first event (`response.created`)."""
    if reply.format != RESPONSES or request.native is None:
        return None
    if request.native[1].get("store") is False:
        return None
    if reply.stream is None:
        made = _json(reply.body)
    else:
        first = reply.first_chunk.split(b"\n\n", 1)[0]
        made = (_json(sse_data(first) or b"") or {}).get("response")
        if made is None:  # the first read ended inside the event: its id comes first
            found = _CREATED_ID.search(first)
            made = {"id": found.group(1).decode()} if found else None
    made = made.get("id") if isinstance(made, dict) else None
    return made if isinstance(made, str) and 0 < len(made) <= 64 else None


def _json(data: bytes) -> dict | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _holder_deleted(response_id, key_id: int) -> GatewayError:
    """The key that held the conversation was deleted: no key can reach that response."""
    return GatewayError(
        400,
        f"The response '{response_id}' (previous_response_id) was held by the upstream "
        f"account of provider key #{key_id}, which has been deleted; no other key knows "
        "that response. Start the conversation again without previous_response_id.",
        code="previous_response_gone",
        param="previous_response_id",
    )


def _holder_elsewhere(response_id, key_id: int, profile: str) -> GatewayError:
    """The key that holds the conversation is not in the pool this request is served from."""
    return GatewayError(
        400,
        f"Previous response with id '{response_id}' not found. It is held by the upstream "
        f"account of provider key #{key_id}, which is not in the pool of profile "
        f"'{profile}' this request is served from (this client key's profile, or the "
        "master key's X-Profile); no key of that pool knows that response. Continue the "
        "conversation in the profile that made it, or start it again without "
        "previous_response_id.",
        code="previous_response_not_found",
        param="previous_response_id",
    )


def _holder_out_of_service(response_id, key_id: int, status: str) -> GatewayError:
    """The key that holds the conversation is out of service until an admin acts."""
    return GatewayError(
        400,
        f"The response '{response_id}' (previous_response_id) is held by the upstream "
        f"account of provider key #{key_id}, which is out of service (status: {status}); "
        "no other key knows that response. Ask an admin to put the key back in service, "
        "or start the conversation again without previous_response_id.",
        code="previous_response_unavailable",
        param="previous_response_id",
    )


def _holder_unavailable(response_id, key_id: int) -> GatewayError:
    """The key that holds the conversation cannot serve now: only it knows the response."""
    return GatewayError(
        503,
        f"The response '{response_id}' (previous_response_id) is held by the upstream "
        f"account of provider key #{key_id}, which cannot serve this model now (it is "
        "unavailable, or does not serve the model); no other key knows that response. "
        "Retry later, or start the conversation again without previous_response_id.",
        type="upstream_error",
        code="no_available_keys",
    )

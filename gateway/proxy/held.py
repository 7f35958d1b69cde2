"""Stored Responses-API responses read back or deleted (`GET` / `DELETE
/v1/responses/{id}`): KeyRelay's own (a translated conversation) from its store; one a
Responses-API upstream made (passthrough) from the provider key whose account holds it."""

from __future__ import annotations

import orjson
from sqlalchemy import Engine

from gateway import periods, store
from gateway.errors import GatewayError
from gateway.keys.secrets import SecretUnreadable
from gateway.providers.base import Timeouts, TransportError
from gateway.proxy.candidates import Candidates
from gateway.proxy.pins import Pins
from gateway.responses_store import ResponseStore


class HeldResponses:
    def __init__(
        self,
        responses: ResponseStore,
        pins: Pins,
        candidates: Candidates,
        adapters: dict,
        timeouts: Timeouts,
    ) -> None:
        self.responses, self.pins, self.candidates = responses, pins, candidates
        self.adapters, self.timeouts = adapters, timeouts

    @property
    def engine(self) -> Engine:
        return self.pins.engine

    def get(self, response_id: str, client_key_id: int | None) -> tuple[int, bytes]:
        """(status, JSON body) of a response this caller made; a 404 if there is none."""
        try:
            _, response = self.responses.load(response_id, client_key_id)
        except GatewayError as missing:
            return self._ask_holder("GET", response_id, client_key_id, missing)
        return 200, orjson.dumps(response)

    def delete(self, response_id: str, client_key_id: int | None) -> tuple[int, bytes]:
        """Delete a response this caller made, here or upstream; a 404 if there is none."""
        if self.responses.delete(response_id, client_key_id):
            return 200, orjson.dumps({"id": response_id, "object": "response", "deleted": True})
        missing = ResponseStore.not_found(response_id)
        status, body = self._ask_holder("DELETE", response_id, client_key_id, missing)
        if status < 300:
            self.pins.forget_response(response_id)
        return status, body

    def _ask_holder(self, method, response_id, client_key_id, missing) -> tuple[int, bytes]:
        """The upstream's answer about a response it holds (its error as it came)."""
        key_id = self.pins.holder(response_id, client_key_id)
        if key_id is None:
            raise missing
        clock = self.pins.clock
        with self.engine.connect() as conn:
            key = store.load_key(conn, key_id, periods.local_day(clock.now()))
        if key is None:  # its key was deleted: no one can reach that account now
            raise missing
        if key.status == "disabled":  # an admin took it out: it is used for nothing
            raise _disabled(key_id)
        try:
            target = self.candidates.target(key)
        except SecretUnreadable:
            raise _unreachable(key_id, "its secret cannot be decrypted") from None
        adapter = self.adapters[key.provider]
        try:
            reply = target.scrub.reply(
                adapter.stored_response(target, response_id, self.timeouts, method)
            )
        except TransportError as exc:
            raise _unreachable(key_id, str(target.scrub.error(exc))) from None
        if reply.status >= 500 or reply.status in (401, 403):
            # The upstream's failure, or its account's refusal: not the client's to fix.
            text = reply.body[:200].decode("utf-8", "replace")
            raise _unreachable(key_id, f"HTTP {reply.status}: {text}")
        return reply.status, reply.body


def _disabled(key_id: int) -> GatewayError:
    return GatewayError(
        503,
        f"The response is held by the upstream account of provider key #{key_id}, which is "
        "disabled; no other key can read it. Retry once the key is enabled again.",
        type="upstream_error",
        code="no_available_keys",
    )


def _unreachable(key_id: int, why: str) -> GatewayError:
    return GatewayError(
        502,
        f"The response is held by the upstream of provider key #{key_id}, which could not "
        f"be asked: {why}. Retry later.",
        type="upstream_error",
        code="upstream_failed",
    )

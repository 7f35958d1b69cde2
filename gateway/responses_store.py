"""Stored responses of the Responses API: saved when a request says `store` (the default),
read back for `previous_response_id` and `GET /v1/responses/{id}`, only by the client key
that made them, deleted with the request log's retention."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
from sqlalchemy import Engine, delete, insert, select

from gateway.errors import GatewayError
from models import StoredResponse

table = StoredResponse.__table__


class ResponseStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(
        self,
        response_id: str,
        client_key_id: int | None,
        conversation: list[dict],
        response: dict,
        now: datetime,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(table).values(
                    id=response_id,
                    client_key_id=client_key_id,
                    created_at=now,
                    conversation=orjson.dumps(conversation).decode(),
                    response=orjson.dumps(response).decode(),
                )
            )

    def load(self, response_id: object, client_key_id: int | None) -> tuple[list[dict], dict]:
        """(conversation, response) of a stored response this caller made, or a 404."""
        row = None
        if isinstance(response_id, str):
            with self.engine.connect() as conn:
                query = select(table.c.client_key_id, table.c.conversation, table.c.response)
                row = conn.execute(query.where(table.c.id == response_id)).first()
        if row is None or (client_key_id is not None and row.client_key_id != client_key_id):
            raise self.not_found(response_id)
        return orjson.loads(row.conversation), orjson.loads(row.response)

    @staticmethod
    def not_found(response_id: object) -> GatewayError:
        """The 404 of a response no one here holds for this caller."""
        return GatewayError(
            404,
            f"No stored response with id '{response_id}' (responses made with "
            "`store: false` are not kept, and stored ones expire with the request log).",
            code="response_not_found",
            param="previous_response_id",
        )

    def delete(self, response_id: str, client_key_id: int | None) -> bool:
        """Delete a stored response this caller made; whether there was one."""
        query = delete(table).where(table.c.id == response_id)
        if client_key_id is not None:
            query = query.where(table.c.client_key_id == client_key_id)
        with self.engine.begin() as conn:
            return bool(conn.execute(query).rowcount)

    def prune(self, now: datetime, days: int) -> int:
        """Delete responses older than `days`; how many."""
        with self.engine.begin() as conn:
            gone = conn.execute(
                delete(table).where(table.c.created_at < now - timedelta(days=days))
            )
        return gone.rowcount or 0

"""The `openai` provider: any OpenAI-compatible API at a configurable base URL."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from gateway.policy import Outcome
from gateway.providers.base import ProviderAdapter, Target, Timeouts, TransportError, UpstreamReply

READ_SIZE = 65536


def _transport_error(exc: Exception) -> TransportError:
    """Map a urllib3 exception to the attempt outcome it means."""
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
    if isinstance(exc, NewConnectionError):
        return TransportError(Outcome.CONNECTION_ERROR, "upstream unreachable (connection refused)")
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError):
        return TransportError(Outcome.TIMEOUT, "upstream timed out")
    if isinstance(exc, ProtocolError):
        return TransportError(Outcome.CONNECTION_ERROR, "upstream closed the connection")
    return TransportError(Outcome.CONNECTION_ERROR, f"upstream error: {type(exc).__name__}")


def _chunks(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """Yield body bytes as soon as they arrive, chunked or not."""
    try:
        if response.chunked and response.supports_chunked_reads():
            yield from response.read_chunked(decode_content=True)
        else:
            while chunk := response.read1(READ_SIZE):
                yield chunk
    except (HTTPError, OSError) as exc:
        raise _transport_error(exc) from None
    # Read to the end: the connection can go back to the pool for the next request.
    response.release_conn()


def _abandon(response: urllib3.BaseHTTPResponse) -> None:
    """Drop an unfinished stream's connection; a finished one was already released."""
    response.close()
    response.release_conn()


def _headers(response: urllib3.BaseHTTPResponse) -> dict[str, str]:
    """Response headers with lower-case names."""
    return {name.lower(): value for name, value in response.headers.items()}


class OpenAIAdapter(ProviderAdapter):
    """Talks the OpenAI wire protocol as is; no translation needed."""

    name = "openai"

    def _headers(self, target: Target) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {target.secret}",
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
        }

    def _send(
        self, method: str, url: str, target: Target, timeouts: Timeouts, body=None, stream=False
    ) -> urllib3.BaseHTTPResponse:
        try:
            return self.http.request(
                method,
                url,
                body=body,
                headers=self._headers(target),
                timeout=urllib3.Timeout(connect=timeouts.connect, read=timeouts.read),
                retries=False,
                redirect=False,
                preload_content=not stream,
            )
        except (HTTPError, OSError) as exc:
            raise _transport_error(exc) from None

    def chat(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        response = self._send(
            "POST", f"{target.base_url}/chat/completions", target, timeouts, orjson.dumps(body)
        )
        return UpstreamReply(response.status, _headers(response), response.data)

    def chat_stream(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        response = self._send(
            "POST",
            f"{target.base_url}/chat/completions",
            target,
            timeouts,
            orjson.dumps(body),
            stream=True,
        )
        headers = _headers(response)
        if response.status >= 300:
            try:
                data = response.read()
            except (HTTPError, OSError) as exc:
                raise _transport_error(exc) from None
            finally:
                response.release_conn()
            return UpstreamReply(response.status, headers, data)
        return UpstreamReply(
            response.status,
            headers,
            chunks=_chunks(response),
            _release=lambda: _abandon(response),
        )

    def list_models(self, target: Target, timeouts: Timeouts) -> UpstreamReply:
        response = self._send("GET", f"{target.base_url}/models", target, timeouts)
        return UpstreamReply(response.status, _headers(response), response.data)

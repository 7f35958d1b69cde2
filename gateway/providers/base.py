"""The provider adapter interface: OpenAI-format requests in, OpenAI-format answers out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from gateway.policy import Outcome

if TYPE_CHECKING:
    from gateway.providers.http import UpstreamClient


@dataclass(frozen=True)
class Target:
    """The provider key an attempt uses, with its secret decrypted for this call only."""

    key_id: int
    provider: str
    base_url: str
    secret: str = field(repr=False)


@dataclass
class Timeouts:
    """Seconds to connect and to wait for bytes from the upstream."""

    connect: float
    read: float


class TransportError(Exception):
    """The upstream could not be reached, went silent, or answered something unreadable."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class UpstreamReply:
    """An upstream answer: status, headers, and either the whole body or a chunk stream."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: Iterator[bytes] | None = None
    _release: object = None
    # Filled by the gateway: the parsed JSON body, or the first stream bytes.
    parsed: dict | None = None
    first_chunk: bytes = b""

    def close(self) -> None:
        """Give the connection back (or drop it, for an unfinished stream)."""
        if self._release is not None:
            self._release()
            self._release = None


def retry_after_seconds(headers: dict[str, str], now: datetime) -> float | None:
    """Seconds the upstream asked us to wait (`retry-after-ms`, `Retry-After` secs or date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


class ProviderAdapter(ABC):
    """One upstream API kind. Adding a provider is one module and one registry line."""

    name: str = ""

    def __init__(self, http: UpstreamClient) -> None:
        self.http = http

    @abstractmethod
    def chat(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        """A non-streaming chat completion; the reply body is an OpenAI chat.completion."""

    @abstractmethod
    def chat_stream(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        """A streaming chat completion; on 2xx, `chunks` yields OpenAI SSE bytes as they come."""

    @abstractmethod
    def list_models(self, target: Target, timeouts: Timeouts) -> UpstreamReply:
        """The upstream's model list (the cheap call a key test makes)."""

"""The upstream HTTP client: `http.client` connections kept alive in a pool per host.

The proxy makes one upstream call per attempt, so the client's own cost is paid on every
request. Measured per keep-alive call against a local upstream (bench/http_client.py):
requests.Session ~1480 µs, urllib3.PoolManager ~480 µs, http.client ~210 µs. This module
adds to http.client only what the gateway needs: a LIFO pool of idle connections per
(scheme, host, port), separate connect and read timeouts, a check that an idle connection
was not closed by the upstream before it is reused, and one exception type
(`TransportError`) whose outcome tells the attempt loop what happened.

Thread- and greenlet-safe: the pools are deques (append/pop are atomic), and nothing else
is shared between calls.
"""

from __future__ import annotations

import http.client
import select
import ssl
from collections import deque
from collections.abc import Iterator
from urllib.parse import urlsplit

from gateway.policy import Outcome
from gateway.providers.transport import Timeouts, TransportError

READ_SIZE = 65536
_TLS = ssl.create_default_context()


def transport_error(exc: BaseException, connecting: bool = False) -> TransportError:
    """The attempt outcome an exception from a connection means."""
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return TransportError(Outcome.TIMEOUT, "upstream timed out")
    if connecting or isinstance(exc, ConnectionRefusedError):
        return TransportError(Outcome.CONNECTION_ERROR, "upstream unreachable (connection refused)")
    if isinstance(exc, http.client.HTTPException | ConnectionError):
        return TransportError(Outcome.CONNECTION_ERROR, "upstream closed the connection")
    return TransportError(Outcome.CONNECTION_ERROR, f"upstream error: {type(exc).__name__}")


def _os_poll():
    """The operating system's poll: a zero-timeout check never blocks, so it needs none of
    gevent's cooperative poll (whose watchers and hub switch cost ~4 % of a worker's CPU
    under load, measured with py-spy)."""
    try:
        from gevent import monkey
    except ImportError:
        return select.poll
    return monkey.get_original("select", "poll")


_poll = _os_poll()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed (or sent something) while in the pool."""
    if conn.sock is None:
        return True
    poller = _poll()
    poller.register(conn.sock, select.POLLIN)
    return bool(poller.poll(0))  # readable while idle: EOF, or bytes nobody asked for


class Response:
    """One upstream answer; the body is read whole (`read`) or as it comes (`chunks`)."""

    __slots__ = ("status", "headers", "_raw", "_conn", "_client", "_key")

    def __init__(self, raw, conn, client: UpstreamClient, key) -> None:
        self.status = raw.status
        self.headers = {name.lower(): value for name, value in raw.getheaders()}
        self._raw, self._conn, self._client, self._key = raw, conn, client, key

    def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        try:
            data = self._raw.read()
        except (OSError, http.client.HTTPException) as exc:
            self.abandon()
            raise transport_error(exc) from None
        self._release()
        return data

    def chunks(self) -> Iterator[bytes]:
        """Body bytes as soon as they arrive (chunked or not), then the connection is
        given back; a transport failure raises TransportError."""
        raw = self._raw
        try:
            while chunk := raw.read1(READ_SIZE):
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            self.abandon()
            raise transport_error(exc) from None
        if raw.length:  # the upstream hung up before the Content-Length it announced
            self.abandon()
            raise TransportError(Outcome.CONNECTION_ERROR, "upstream closed the connection")
        # read1 leaves a Content-Length body "open" at its end; the connection may not
        # take the next request until the response is closed.
        raw.close()
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._raw.will_close:
            conn.close()
        else:
            self._client.put(self._key, conn)

    def abandon(self) -> None:
        """Drop the connection of an answer not read to its end (it cannot be reused)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._raw.close()
            conn.close()


class UpstreamClient:
    """Keep-alive connections to the upstreams, at most `maxsize` idle ones per host."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._idle: dict[tuple, deque] = {}
        self._targets: dict[str, tuple[tuple, str]] = {}

    def _split(self, url: str) -> tuple[tuple, str]:
        """(scheme, host, port) and the path of a URL, parsed once per distinct URL."""
        hit = self._targets.get(url)
        if hit is None:
            try:  # a URL saved before base_url was checked ("http://[::1", a bad port)
                parts = urlsplit(url)
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise TransportError(
                    Outcome.CONNECTION_ERROR, "the key's base_url is not a valid URL"
                ) from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise TransportError(Outcome.CONNECTION_ERROR, f"not an http(s) URL: {url}")
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            hit = ((parts.scheme, parts.hostname, port), path)
            if len(self._targets) < 4096:
                self._targets[url] = hit
        return hit

    def put(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        """Give a connection back for the next call to that host."""
        idle = self._idle.setdefault(key, deque())
        if len(idle) < self.maxsize:
            idle.append(conn)
        else:
            conn.close()

    def _connection(self, key: tuple, timeouts: Timeouts) -> http.client.HTTPConnection:
        idle = self._idle.get(key)
        while idle:
            try:
                conn = idle.pop()
            except IndexError:
                break
            if not _dropped(conn):
                conn.sock.settimeout(timeouts.read)
                return conn
            conn.close()
        scheme, host, port = key
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeouts.connect, context=_TLS)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeouts.connect)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise transport_error(exc, connecting=not isinstance(exc, TimeoutError)) from None
        conn.sock.settimeout(timeouts.read)
        return conn

    def request(
        self, method: str, url: str, headers: dict, timeouts: Timeouts, body: bytes | None = None
    ) -> Response:
        """Send a request and read the answer's status and headers."""
        key, path = self._split(url)
        conn = self._connection(key, timeouts)
        try:
            conn.request(method, path, body=body, headers=headers)
            raw = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise transport_error(exc) from None
        except ValueError:
            # A header that cannot be sent: a secret saved with a character outside Latin-1
            # or a line break. The key's fault (the next key is tried); the exception's text
            # may quote the header, so it is not repeated.
            conn.close()
            raise TransportError(
                Outcome.AUTH_FAILED, "the key's secret cannot be sent in an HTTP header"
            ) from None
        return Response(raw, conn, self, key)

    def clear(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            while idle:
                try:
                    idle.pop().close()
                except IndexError:
                    break
        self._idle.clear()

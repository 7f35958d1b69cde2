"""The upstream HTTP client: `http.client` connections kept alive in a pool per host.

The proxy makes one upstream call per attempt, so the client's own cost is paid on every
request. Measured per keep-alive call against a local upstream (bench/http_client.py):
requests.Session ~1480 µs, urllib3.PoolManager ~480 µs, http.client ~210 µs. This module
adds to http.client only what the gateway needs: a LIFO pool of idle connections per
(scheme, host, port), separate connect and read timeouts, a check that an idle connection
was not closed by the upstream before it is reused, and one exception type
(`TransportError`) whose outcome tells the attempt loop what happened.

The read timeout bounds an answer as a whole, not each read: an upstream that trickles a
byte now and then would otherwise hold the call as long as it likes. A whole answer
(status, headers and body) arrives within `Timeouts.read` of the request, or the call
times out. A stream's status, headers and first event arrive within it, then each next
event within it of the one before: an idle timeout between events, so a stream that keeps
sending events (keep-alive comments too) runs as long as it does, and one that trickles
bytes without ever finishing an event is cut.

Thread- and greenlet-safe: the pools are deques (append/pop are atomic), and nothing else
is shared between calls.
"""

from __future__ import annotations

import http.client
import io
import re
import select
import ssl
import time
from collections import deque
from collections.abc import Iterator
from functools import partial
from urllib.parse import urlsplit

from gateway.errors import GatewayError
from gateway.policy import Outcome
from gateway.providers.transport import Timeouts, TransportError

READ_SIZE = 65536
# A stream's first event is held back at most this long (bytes) before it is passed on.
FIRST_EVENT_MAX = 1 << 20
_TLS = ssl.create_default_context()
# The headers that carry a key's secret (each provider kind's credentials header): only a
# value of theirs that cannot be sent is the key's fault.
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key"})
# What http.client refuses in a header (its own rules): a name with a colon, a space or a
# line break; a value with a line break that does not continue the header.
_LEGAL_NAME = re.compile(r"[^:\s][^:\r\n]*")
_ILLEGAL_VALUE = re.compile(r"\n(?![ \t])|\r(?![ \t\n])")
# Where a server-sent event ends: a blank line (LF, CRLF or CR line ends).
_EVENT_ENDS = (b"\n\n", b"\n\r\n", b"\r\r")
# A read past the answer's time still takes what already arrived, waiting this long at most.
_LAST_LOOK = 0.001


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


class _Bounded(io.RawIOBase):
    """A connection's socket read as a file, no read waiting past `until` (a
    time.monotonic() instant): what bounds an answer as a whole. It stands for the socket
    toward http.client, which reads an answer through `makefile`."""

    def __init__(self, sock, until: float) -> None:
        # The socket's own file keeps it open while the answer is read (http.client closes
        # its connection's reference when the answer runs to the connection's end).
        self._sock, self._file, self.until = sock, sock.makefile("rb", buffering=0), until

    def makefile(self, mode: str) -> io.BufferedReader:
        """The buffered file http.client reads the answer from."""
        return io.BufferedReader(self)

    def readable(self) -> bool:
        """Readable: it is the answer's byte source."""
        return True

    def readinto(self, buffer) -> int:
        """The next bytes the upstream sent; TimeoutError once `until` passes."""
        # Past its time a read still takes bytes that already arrived (a client that reads
        # a stream slowly leaves events waiting), but waits for no more.
        self._sock.settimeout(max(self.until - time.monotonic(), _LAST_LOOK))
        return self._file.readinto(buffer)

    def close(self) -> None:
        """Let go of the socket (closed if its connection let go of it too)."""
        self._file.close()
        super().close()


class _Answer(http.client.HTTPResponse):
    """An answer read through `_Bounded`, whose `until` a stream moves on at each event."""

    def __init__(self, sock, *args, until: float, **kwargs) -> None:
        self.bound = _Bounded(sock, until)
        super().__init__(self.bound, *args, **kwargs)


def _ends_event(tail: bytes, chunk: bytes) -> bool:
    """Whether a server-sent event ends in `chunk` (`tail`: the previous chunk's end)."""
    edge = tail + chunk[:2]
    return any(end in chunk or end in edge for end in _EVENT_ENDS)


def _unsendable(name: str, value: str) -> bool:
    """Whether http.client refuses to send this header."""
    try:
        name.encode("ascii")
        value.encode("latin-1")
    except UnicodeEncodeError:
        return True
    return not _LEGAL_NAME.fullmatch(name) or bool(_ILLEGAL_VALUE.search(value))


def header_refused(headers: dict) -> TransportError | GatewayError:
    """What a header that cannot be sent means: a secret's header, the key's fault (its
    secret was saved with a line break or a character outside Latin-1; the next key is
    tried); any other header, a 502 that leaves the key alone. Neither quotes the value."""
    bad = [name for name, value in headers.items() if _unsendable(str(name), str(value))]
    if any(name.lower() in SECRET_HEADERS for name in bad):
        return TransportError(
            Outcome.AUTH_FAILED, "the key's secret cannot be sent in an HTTP header"
        )
    named = f" ({', '.join(repr(name) for name in bad)})" if bad else ""
    return GatewayError(
        502,
        f"A header for the upstream{named} holds a line break or a character outside "
        "Latin-1 and cannot be sent; check the key's settings.",
        type="upstream_error",
        code="upstream_header_unsendable",
    )


class Response:
    """One upstream answer; the body is read whole (`read`) or as it comes (`chunks`)."""

    __slots__ = ("status", "headers", "_raw", "_conn", "_client", "_key", "_idle")

    def __init__(self, raw, conn, client: UpstreamClient, key, idle: float) -> None:
        self.status = raw.status
        self.headers = {name.lower(): value for name, value in raw.getheaders()}
        self._raw, self._conn, self._client, self._key = raw, conn, client, key
        self._idle = idle  # a stream's longest wait from one event to the next

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
        given back; a transport failure raises TransportError, and so does a wait of more
        than the read timeout for the next server-sent event to end."""
        raw, tail = self._raw, b""
        # The first event is held back until it ends (or the body does): an attempt whose
        # stream never finishes an event in time fails before the client has seen a byte,
        # so the next key can still answer.
        first: bytearray | None = bytearray()
        try:
            while chunk := raw.read1(READ_SIZE):
                ended = _ends_event(tail, chunk)
                if ended:
                    raw.bound.until = time.monotonic() + self._idle
                tail = chunk[-2:]
                if first is None:
                    yield chunk
                    continue
                first += chunk
                if ended or len(first) > FIRST_EVENT_MAX:
                    chunk, first = bytes(first), None
                    yield chunk
            if first:
                yield bytes(first)
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
        # The whole answer (a stream: its first event) within the read timeout.
        conn.response_class = partial(_Answer, until=time.monotonic() + timeouts.read)
        try:
            conn.request(method, path, body=body, headers=headers)
            raw = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise transport_error(exc) from None
        except ValueError:
            # A header that cannot be sent; the exception's text may quote the header (a
            # secret), so it is not repeated.
            conn.close()
            raise header_refused(headers) from None
        return Response(raw, conn, self, key, timeouts.read)

    def clear(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            while idle:
                try:
                    idle.pop().close()
                except IndexError:
                    break
        self._idle.clear()

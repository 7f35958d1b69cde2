"""The upstream HTTP client: HTTP/1.1 over sockets kept alive in a pool per host.

The proxy makes one upstream call per attempt, so the client's own cost is paid on every
request. Measured per keep-alive call against a local upstream (bench/http_client.py):
requests.Session ~1480 µs, urllib3.PoolManager ~480 µs, http.client ~210 µs. http.client
itself spends most of its time in Python: the request built header by header and written
in two system calls, a buffered file per answer, the headers parsed by the email package.
This module speaks the little of HTTP/1.1 the gateway needs itself, by http.client's
rules (the same request bytes; Content-Length, chunked or read-to-the-end bodies; which
answers leave the connection open): one write per request, the answer's head parsed from
one read, its body taken from the same buffer. CPU per call under gevent, same process,
alternated: http.client with this module's pool 197-220 µs,
this client 59-64 µs. On top: a LIFO pool of idle connections per (scheme, host, port),
separate connect and read timeouts, a check that an idle connection was not closed by
the upstream before it is reused, and one exception type (`TransportError`) whose outcome
tells the attempt loop what happened.

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
import re
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterator
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
# http.client's bounds on what an upstream may send as a status line and headers.
_MAX_LINE = 65536
_MAX_HEADERS = 100
_MAX_HEAD = _MAX_LINE * 4
# The framing headers of which the first one counts, as http.client reads them.
_FIRST_WINS = frozenset({"content-length", "transfer-encoding"})
# A path http.client refuses to send (control characters, a space).
_BAD_PATH = re.compile("[\x00-\x20\x7f]")
# A body up to this size goes in the same write as the headers; a larger one after them.
_JOIN_MAX = 1 << 16


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


def _dropped(conn: _Conn) -> bool:
    """Whether an idle connection was closed (or sent something) while in the pool."""
    if conn.sock is None:
        return True
    poller = _poll()
    poller.register(conn.sock, select.POLLIN)
    return bool(poller.poll(0))  # readable while idle: EOF, or bytes nobody asked for


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


class _Conn:
    """One keep-alive connection to an upstream: its socket, and the answer it is reading
    (bytes read but not taken yet, the instant no read may wait past)."""

    __slots__ = ("sock", "pending", "until")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.pending, self.until = sock, b"", 0.0

    def recv(self) -> bytes:
        """The next bytes the upstream sent (b"" at its end); TimeoutError once `until`
        passes. Past its time a read still takes bytes that already arrived (a client that
        reads a stream slowly leaves events waiting), but waits for no more."""
        self.sock.settimeout(max(self.until - time.monotonic(), _LAST_LOOK))
        return self.sock.recv(READ_SIZE)

    def close(self) -> None:
        self.sock.close()


class _Framing:
    """How an answer's body ends, from its status and headers (http.client's rules): a
    Content-Length, chunked coding, or the connection's end; and whether the connection
    may take another request after it."""

    __slots__ = ("length", "chunked", "will_close", "chunk_left", "crlf_due", "trailer", "ended")

    def __init__(self, version: int, status: int, headers: dict, method: str) -> None:
        coding = headers.get("transfer-encoding")
        self.chunked = coding is not None and coding.lower() == "chunked"
        self.will_close = _closes(version, headers)
        self.length = None
        length = headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (204, 304) or 100 <= status < 200 or method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True
        # Chunked: bytes of the current chunk still to come, whether the CRLF after a
        # chunk's data is, whether the last chunk came (its trailer is being read), and
        # whether the trailer ended too.
        self.chunk_left, self.crlf_due, self.trailer, self.ended = 0, False, False, False

    def done(self) -> bool:
        """Whether the body is complete (a body read to the connection's end: never)."""
        if self.chunked:
            return self.ended
        return self.length == 0

    def take(self, conn: _Conn) -> bytes:
        """The body bytes `conn.pending` holds, taken out of it (chunked coding removed)."""
        if not self.chunked:
            data = conn.pending
            if self.length is not None and len(data) > self.length:
                data = data[: self.length]
            conn.pending = conn.pending[len(data) :]
            if self.length is not None:
                self.length -= len(data)
            return data
        return self._unchunk(conn)

    def _unchunk(self, conn: _Conn) -> bytes:
        """The data of the next chunk `conn.pending` holds, whole or in part, framing
        removed; what is left (later chunks, a size line not yet whole) stays pending."""
        buf, at, parts = conn.pending, 0, []
        try:
            while not self.ended:
                if self.chunk_left > 0:
                    piece = buf[at : at + self.chunk_left]
                    if not piece:
                        break
                    at += len(piece)
                    self.chunk_left -= len(piece)
                    parts.append(piece)
                    if self.chunk_left:
                        break
                    self.crlf_due = True
                    # One chunk at a time, as http.client's read1 gave them: a stream's
                    # reader (the budget's cut among them) sees each event as it was sent,
                    # not a run of them that arrived in one read.
                    break
                if self.crlf_due:
                    if len(buf) - at < 2:
                        break
                    at, self.crlf_due = at + 2, False
                end = buf.find(b"\n", at)
                if end < 0:
                    if len(buf) - at > _MAX_LINE:
                        raise http.client.LineTooLong("chunk size")
                    break
                line, at = buf[at:end], end + 1
                if self.trailer:
                    self.ended = line in (b"", b"\r")  # the trailer's end
                    continue
                try:
                    size = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    raise http.client.IncompleteRead(b"") from None
                if size < 0:
                    raise http.client.IncompleteRead(b"")
                if size:
                    self.chunk_left = size
                else:
                    self.trailer = True
        finally:
            conn.pending = buf[at:]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_more(self, conn: _Conn) -> bytes:
        """The next body bytes as they come (b"" once the body is complete)."""
        while True:
            if conn.pending:
                data = self.take(conn)
                if data or self.done():
                    return data
            elif self.done():
                return b""
            received = conn.recv()
            if not received:
                if self.chunked and self.trailer:  # no end to the trailer: it is over
                    self.ended = True
                    return b""
                if self.chunked or self.length:  # cut short
                    raise http.client.IncompleteRead(b"")
                self.length = 0  # read to the connection's end: this is it
                return b""
            conn.pending += received


def _closes(version: int, headers: dict) -> bool:
    """Whether the upstream closes the connection after this answer."""
    connection = headers.get("connection")
    if version == 11:
        return bool(connection) and "close" in connection.lower()
    if headers.get("keep-alive"):
        return False
    if connection and "keep-alive" in connection.lower():
        return False
    proxy = headers.get("proxy-connection")
    return not (proxy and "keep-alive" in proxy.lower())


def _read_head(conn: _Conn) -> tuple[int, int, dict]:
    """The answer's (HTTP version, status, headers with lower-case names), skipping a
    `100 Continue`; what follows the headers stays in `conn.pending`."""
    while True:
        while True:
            buffered = conn.pending
            end = buffered.find(b"\n\r\n")
            bare = buffered.find(b"\n\n")
            if bare >= 0 and (end < 0 or bare < end):
                end, size = bare, 2
            else:
                size = 3
            if end >= 0:
                break
            if len(buffered) > _MAX_HEAD:
                raise http.client.LineTooLong("header block")
            data = conn.recv()
            if not data:
                if not buffered:
                    raise http.client.RemoteDisconnected(
                        "Remote end closed connection without response"
                    )
                raise http.client.IncompleteRead(buffered)
            conn.pending = buffered + data
        head, conn.pending = buffered[: end + 1], buffered[end + size :]
        lines = head.decode("iso-8859-1").split("\n")
        version, status = _status(lines[0])
        if status != 100:
            break
    if len(lines) > _MAX_HEADERS + 2:
        raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    name = None
    for line in lines[1:]:
        line = line.rstrip("\r\n")
        if not line:
            continue
        if line[0] in " \t" and name is not None:  # a folded line continues the header
            headers[name] += " " + line.strip(" \t")
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip(" \t")
        if name in _FIRST_WINS and name in headers:
            continue  # framing follows the first (http.client's rule)
        headers[name] = value
    return version, status, headers


def _status(line: str) -> tuple[int, int]:
    """(HTTP version as 10 or 11, status) of a status line; BadStatusLine if it is none."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise http.client.BadStatusLine(line)
    try:
        status = int(parts[1])
    except ValueError:
        raise http.client.BadStatusLine(line) from None
    if not 100 <= status <= 999:
        raise http.client.BadStatusLine(line)
    if parts[0] == "HTTP/1.0":
        return 10, status
    if parts[0].startswith("HTTP/1."):
        return 11, status
    raise http.client.UnknownProtocol(parts[0])


class Response:
    """One upstream answer; the body is read whole (`read`) or as it comes (`chunks`)."""

    __slots__ = ("status", "headers", "_frame", "_conn", "_client", "_key", "_idle")

    def __init__(self, status, headers, frame, conn, client: UpstreamClient, key, idle) -> None:
        self.status, self.headers, self._frame = status, headers, frame
        self._conn, self._client, self._key = conn, client, key
        self._idle = idle  # a stream's longest wait from one event to the next

    def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        frame, conn, parts = self._frame, self._conn, []
        try:
            while chunk := frame.read_more(conn):
                parts.append(chunk)
        except (OSError, http.client.HTTPException) as exc:
            self.abandon()
            raise transport_error(exc) from None
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._release()
        return data

    def chunks(self) -> Iterator[bytes]:
        """Body bytes as soon as they arrive (chunked or not), then the connection is
        given back; a transport failure raises TransportError, and so does a wait of more
        than the read timeout for the next server-sent event to end."""
        frame, conn, tail = self._frame, self._conn, b""
        # The first event is held back until it ends (or the body does): an attempt whose
        # stream never finishes an event in time fails before the client has seen a byte,
        # so the next key can still answer.
        first: bytearray | None = bytearray()
        try:
            while chunk := frame.read_more(conn):
                ended = _ends_event(tail, chunk)
                if ended:
                    conn.until = time.monotonic() + self._idle
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
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # Bytes past the answer's end are not an answer to anything: the connection goes.
        if self._frame.will_close or conn.pending:
            conn.close()
        else:
            self._client.put(self._key, conn)

    def abandon(self) -> None:
        """Drop the connection of an answer not read to its end (it cannot be reused)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class UpstreamClient:
    """Keep-alive connections to the upstreams, at most `maxsize` idle ones per host."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._idle: dict[tuple, deque] = {}
        self._targets: dict[str, tuple[tuple, str, bytes]] = {}

    def _split(self, url: str) -> tuple[tuple, str, bytes]:
        """(scheme, host, port), the path and the Host header line of a URL, parsed once
        per distinct URL."""
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
            host = parts.hostname
            hit = ((parts.scheme, host, port), path, _host_line(parts.scheme, host, port))
            if len(self._targets) < 4096:
                self._targets[url] = hit
        return hit

    def put(self, key: tuple, conn: _Conn) -> None:
        """Give a connection back for the next call to that host."""
        idle = self._idle.setdefault(key, deque())
        if len(idle) < self.maxsize:
            idle.append(conn)
        else:
            conn.close()

    def _connection(self, key: tuple, timeouts: Timeouts) -> _Conn:
        idle = self._idle.get(key)
        while idle:
            try:
                conn = idle.pop()
            except IndexError:
                break
            if not _dropped(conn):
                return conn
            conn.close()
        scheme, host, port = key
        try:
            sock = socket.create_connection((host, port), timeouts.connect)
        except OSError as exc:
            raise transport_error(exc, connecting=not isinstance(exc, TimeoutError)) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = _TLS.wrap_socket(sock, server_hostname=host)
        except OSError as exc:
            sock.close()
            raise transport_error(exc, connecting=not isinstance(exc, TimeoutError)) from None
        return _Conn(sock)

    def request(
        self, method: str, url: str, headers: dict, timeouts: Timeouts, body: bytes | None = None
    ) -> Response:
        """Send a request and read the answer's status and headers."""
        key, path, host = self._split(url)
        try:
            head = _request_head(method, path, host, headers, body)
        except ValueError:
            # A header that cannot be sent; the exception's text may quote the header (a
            # secret), so it is not repeated.
            raise header_refused(headers) from None
        conn = self._connection(key, timeouts)
        # The whole answer (a stream: its first event) within the read timeout.
        conn.until = time.monotonic() + timeouts.read
        try:
            conn.sock.settimeout(timeouts.read)
            if body and len(body) > _JOIN_MAX:
                conn.sock.sendall(head)
                conn.sock.sendall(body)
            else:  # one write: one segment, one system call
                conn.sock.sendall(head + body if body else head)
            version, status, answer = _read_head(conn)
            frame = _Framing(version, status, answer, method)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise transport_error(exc) from None
        return Response(status, answer, frame, conn, self, key, timeouts.read)

    def clear(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            while idle:
                try:
                    idle.pop().close()
                except IndexError:
                    break
        self._idle.clear()


def _host_line(scheme: str, host: str, port: int) -> bytes:
    """The Host header as http.client writes it (the port only when not the default)."""
    try:
        name = host.encode("ascii")
    except UnicodeEncodeError:
        name = host.encode("idna")
    if b":" in name:  # an IPv6 address
        name = b"[" + name + b"]"
    if port != (443 if scheme == "https" else 80):
        name += b":%d" % port
    return b"Host: " + name + b"\r\n"


def _request_head(method: str, path: str, host: bytes, headers: dict, body) -> bytes:
    """The request line and headers, as http.client would send them (Host,
    Accept-Encoding: identity and Content-Length unless given); ValueError for a header
    http.client refuses to send."""
    if _BAD_PATH.search(path):
        raise http.client.InvalidURL(f"URL can't contain control characters. {path!r}")
    names = {str(name).lower() for name in headers} if headers else ()
    lines = [f"{method} {path} HTTP/1.1\r\n".encode("ascii")]
    if "host" not in names:
        lines.append(host)
    if "accept-encoding" not in names:
        lines.append(b"Accept-Encoding: identity\r\n")
    if "content-length" not in names and "transfer-encoding" not in names:
        if body is not None:
            lines.append(b"Content-Length: %d\r\n" % len(body))
        elif method.upper() in ("PATCH", "POST", "PUT"):
            lines.append(b"Content-Length: 0\r\n")
    for name, value in headers.items():
        lines.append(_header_line(name, value))
    lines.append(b"\r\n")
    return b"".join(lines)


def _header_line(name, value) -> bytes:
    """One header line; ValueError for what http.client would refuse."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    elif isinstance(value, int):
        value = str(value)
    name = name.decode("ascii") if isinstance(name, bytes) else name
    if _unsendable(name, value):
        raise ValueError("a header cannot be sent")
    return f"{name}: {value}\r\n".encode("latin-1")

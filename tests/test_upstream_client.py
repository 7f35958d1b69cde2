"""The upstream HTTP client (gateway/providers/http.py) against real loopback sockets:
keep-alive reuse, an idle connection the upstream closed, chunked streams, and what
each transport failure is reported as."""

from __future__ import annotations

import socket
import threading

import pytest

from gateway.policy import Outcome
from gateway.providers.http import UpstreamClient
from gateway.providers.transport import Timeouts, TransportError

TIMEOUTS = Timeouts(connect=1.0, read=1.0)
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class RawServer:
    """A loopback server that answers each request of a connection from a script, and
    counts the connections it accepted."""

    def __init__(self, answers_per_connection: list[bytes], close_after: bool) -> None:
        self.answers = answers_per_connection
        self.close_after = close_after
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            for answer in self.answers:
                data = b""
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, rest = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(rest) < length:
                    rest += conn.recv(65536)
                conn.sendall(answer)
            while not self.close_after and conn.recv(65536):
                pass  # hold the connection open (unanswered) until the client goes

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.listener.close()


def test_connections_are_kept_alive_and_reused():
    server = RawServer([OK] * 3, close_after=False)
    client = UpstreamClient()
    for _ in range(3):
        response = client.request("POST", server.url(), {}, TIMEOUTS, b"{}")
        assert (response.status, response.read()) == (200, b"{}")
    assert server.connections == 1
    client.clear()
    server.close()


def test_an_idle_connection_the_upstream_closed_is_not_reused():
    server = RawServer([OK], close_after=True)  # one answer, then the server hangs up
    client = UpstreamClient()
    for _ in range(3):
        response = client.request("POST", server.url(), {}, TIMEOUTS, b"{}")
        assert response.read() == b"{}"
        # Wait until the server's close has reached this side, as it would while idle.
        idle = client._idle[("http", "127.0.0.1", server.port)][-1]
        idle.sock.settimeout(1.0)
        assert idle.sock.recv(1, socket.MSG_PEEK) == b""
    assert server.connections == 3  # each call noticed the close and dialled again
    client.clear()
    server.close()


def test_a_chunked_stream_arrives_piece_by_piece():
    events = [b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n', b"data: [DONE]\n\n"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    server = RawServer([head + body, OK], close_after=False)
    client = UpstreamClient()
    response = client.request("POST", server.url(), {}, TIMEOUTS, b"{}")
    assert response.headers["content-type"] == "text/event-stream"
    assert b"".join(response.chunks()) == b"".join(events)
    again = client.request("POST", server.url(), {}, TIMEOUTS, b"{}")
    assert again.read() == b"{}" and server.connections == 1  # reused after the stream
    client.clear()
    server.close()


def test_a_stream_with_a_content_length_leaves_the_connection_reusable():
    events = b'data: {"n": 1}\n\ndata: [DONE]\n\n'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
    server = RawServer([head % len(events) + events] * 3, close_after=False)
    client = UpstreamClient()
    for _ in range(3):
        response = client.request("POST", server.url(), {}, TIMEOUTS, b"{}")
        assert b"".join(response.chunks()) == events
    assert server.connections == 1
    client.clear()
    server.close()
    short = RawServer([head % (len(events) + 10) + events], close_after=True)
    response = UpstreamClient().request("POST", short.url(), {}, TIMEOUTS, b"{}")
    with pytest.raises(TransportError) as cut:
        b"".join(response.chunks())
    assert cut.value.outcome is Outcome.CONNECTION_ERROR
    short.close()


def test_transport_failures_are_named():
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(TransportError) as refused:
        UpstreamClient().request("GET", f"http://127.0.0.1:{port}/v1/models", {}, TIMEOUTS)
    assert refused.value.outcome is Outcome.CONNECTION_ERROR
    assert "connection refused" in str(refused.value)

    silent = RawServer([], close_after=False)  # accepts, never answers
    with pytest.raises(TransportError) as slow:
        UpstreamClient().request("GET", silent.url(), {}, Timeouts(1.0, 0.2))
    assert slow.value.outcome is Outcome.TIMEOUT
    silent.close()

    hangup = RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"], True)
    response = UpstreamClient().request("GET", hangup.url(), {}, TIMEOUTS)
    with pytest.raises(TransportError) as cut:
        response.read()
    assert cut.value.outcome is Outcome.CONNECTION_ERROR
    hangup.close()

    garbage = RawServer([b"NOT HTTP AT ALL\r\n\r\n"], True)
    with pytest.raises(TransportError) as bad:
        UpstreamClient().request("GET", garbage.url(), {}, TIMEOUTS)
    assert bad.value.outcome is Outcome.CONNECTION_ERROR
    garbage.close()

"""The upstream HTTP client (gateway/providers/http.py) against real loopback sockets:
keep-alive reuse, an idle connection the upstream closed, chunked streams, and what
each transport failure is reported as."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from gateway.errors import GatewayError
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


class PacedServer(RawServer):
    """A loopback server that answers one request with `(pause, bytes)` steps: the pace of
    an upstream that trickles."""

    def __init__(self, steps: list[tuple[float, bytes]]) -> None:
        self.steps = steps
        super().__init__([], close_after=True)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            for pause, piece in self.steps:
                time.sleep(pause)  # the upstream's pace, not the test's clock
                try:
                    conn.sendall(piece)
                except OSError:
                    return  # the client gave up


def trickled(data: bytes, every: float = 0.1) -> list[tuple[float, bytes]]:
    return [(every, data[i : i + 1]) for i in range(len(data))]


def test_a_whole_answer_that_trickles_times_out_as_a_whole():
    body = b"x" * 300  # a byte every 0.1 s: ~30 s, never silent for a read timeout
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n"
    server = PacedServer([(0, head), *trickled(body)])
    started = time.monotonic()
    response = UpstreamClient().request("GET", server.url(), {}, Timeouts(1.0, 1.5))
    with pytest.raises(TransportError) as slow:
        response.read()
    assert slow.value.outcome is Outcome.TIMEOUT
    assert time.monotonic() - started < 10
    server.close()


def test_headers_that_trickle_time_out_as_a_whole():
    head = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"p" * 300 + b"\r\nContent-Length: 2\r\n\r\n{}"
    server = PacedServer(trickled(head))
    started = time.monotonic()
    with pytest.raises(TransportError) as slow:
        UpstreamClient().request("GET", server.url(), {}, Timeouts(1.0, 1.5))
    assert slow.value.outcome is Outcome.TIMEOUT
    assert time.monotonic() - started < 10
    server.close()


def test_a_stream_may_run_past_the_read_timeout_while_events_come():
    """The read timeout bounds the wait from one event to the next, not the stream: events
    every 0.2 s for ~3 s arrive whole; then an event trickled a byte at a time (never
    finished) is cut."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    events = [(0.2, b"data: %d\n\n" % n) for n in range(15)]
    server = PacedServer([(0, head), *events, *trickled(b"data: " + b"z" * 300)])
    response = UpstreamClient().request("GET", server.url(), {}, Timeouts(1.0, 1.5))
    started, received = time.monotonic(), b""
    with pytest.raises(TransportError) as idle:
        for chunk in response.chunks():
            received += chunk
    assert idle.value.outcome is Outcome.TIMEOUT
    assert received.startswith(b"".join(event for _, event in events))
    assert time.monotonic() - started < 15  # the trickled event alone would take ~30 s
    server.close()


def test_a_streams_first_event_is_held_back_until_it_ends():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    server = PacedServer([(0, head), (0, b"data: fir"), (0.3, b"st\n"), (0.1, b"\ndata: 2\n\n")])
    response = UpstreamClient().request("GET", server.url(), {}, TIMEOUTS)
    chunks = list(response.chunks())
    assert chunks[0].startswith(b"data: first\n\n")  # not "data: fir" alone
    assert b"".join(chunks) == b"data: first\n\ndata: 2\n\n"
    server.close()


@pytest.mark.parametrize("name", ["Authorization", "x-api-key", "x-goog-api-key"])
def test_a_secret_that_cannot_be_sent_is_the_keys_fault(name):
    server = RawServer([OK], close_after=True)
    headers = {"Content-Type": "application/json", name: "Bearer sk-\u20ac-secret"}
    with pytest.raises(TransportError) as refused:
        UpstreamClient().request("GET", server.url(), headers, TIMEOUTS)
    assert refused.value.outcome is Outcome.AUTH_FAILED
    assert "sk-" not in str(refused.value)
    server.close()


@pytest.mark.parametrize("value", ["cloud-\u20ac", "two\r\nlines", "line\nbreak"])
def test_any_other_header_that_cannot_be_sent_is_a_502_not_the_keys(value):
    server = RawServer([OK], close_after=True)
    headers = {"Authorization": "Bearer sk-fine", "X-Cloud-ID": value}
    with pytest.raises(GatewayError) as refused:
        UpstreamClient().request("GET", server.url(), headers, TIMEOUTS)
    assert refused.value.status == 502 and refused.value.code == "upstream_header_unsendable"
    assert "'X-Cloud-ID'" in refused.value.message and value not in refused.value.message
    server.close()


class RecordingServer(RawServer):
    """A RawServer that keeps each request it read (head and body, as bytes)."""

    def __init__(self, answers_per_connection: list[bytes], close_after: bool) -> None:
        self.requests: list[bytes] = []
        super().__init__(answers_per_connection, close_after)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            for answer in self.answers:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head = data.split(b"\r\n\r\n", 1)[0].lower()
                if b"content-length: 2" in head:
                    while not data.endswith(b"{}"):
                        data += conn.recv(65536)
                self.requests.append(data)
                conn.sendall(answer)
            while conn.recv(65536):
                pass


def test_the_request_is_written_as_http_client_wrote_it():
    server = RecordingServer([OK, OK], close_after=False)
    client = UpstreamClient()
    headers = {"Authorization": "Bearer sk-1", "Content-Type": "application/json"}
    client.request("POST", server.url("/v1/chat/completions?x=1"), headers, TIMEOUTS, b"{}").read()
    client.request("GET", server.url("/v1/models"), headers, TIMEOUTS).read()
    sent = b"".join(server.requests)
    assert sent.startswith(
        b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Accept-Encoding: identity\r\nContent-Length: 2\r\nAuthorization: Bearer sk-1\r\n"
        b"Content-Type: application/json\r\n\r\n{}GET /v1/models HTTP/1.1\r\n" % server.port
    )
    assert b"Content-Length" not in sent.split(b"GET ", 1)[1]  # a GET without a body
    client.clear()
    server.close()


def test_answers_framed_every_way_are_read_whole():
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    continued = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    folded = b"HTTP/1.1 200 OK\r\nX-Long: one\r\n two\r\nContent-Length: 2\r\n\r\n{}"
    server = RawServer([chunked, continued, folded, OK], close_after=False)
    client = UpstreamClient()
    assert client.request("GET", server.url(), {}, TIMEOUTS).read() == b"abcde"
    assert client.request("GET", server.url(), {}, TIMEOUTS).read() == b"{}"
    answer = client.request("GET", server.url(), {}, TIMEOUTS)
    assert (answer.headers["x-long"], answer.read()) == ("one two", b"{}")
    assert client.request("GET", server.url(), {}, TIMEOUTS).read() == b"{}"
    assert server.connections == 1  # each answer ended where its framing said
    client.clear()
    server.close()


def test_an_answer_read_to_the_connections_end_is_not_reused():
    old = b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"a": 1}'
    server = RawServer([old], close_after=True)
    client = UpstreamClient()
    for _ in range(2):
        assert client.request("GET", server.url(), {}, TIMEOUTS).read() == b'{"a": 1}'
    assert server.connections == 2
    client.clear()
    server.close()


def test_bytes_past_an_answers_end_close_its_connection():
    server = RawServer([OK + b"HTTP/1.1 200 OK\r\n", OK], close_after=False)
    client = UpstreamClient()
    for _ in range(2):
        response = client.request("GET", server.url(), {}, TIMEOUTS)
        assert response.read() == b"{}"
    assert server.connections == 2  # the first connection held bytes nobody asked for
    client.clear()
    server.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
    ids=["bad-chunk-size", "cut-mid-chunk"],
)
def test_a_broken_chunked_body_is_a_connection_error(answer):
    server = RawServer([answer], close_after=True)
    response = UpstreamClient().request("GET", server.url(), {}, TIMEOUTS)
    with pytest.raises(TransportError) as broken:
        response.read()
    assert broken.value.outcome is Outcome.CONNECTION_ERROR
    server.close()

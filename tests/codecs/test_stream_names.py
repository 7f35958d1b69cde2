"""The stream encoders name what their client's format cannot show in one SSE comment
line before the stream's last events, and write none when nothing was left out."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import orjson

from gateway.codecs import events as ev
from gateway.codecs.anthropic.stream import Decoder, Encoder
from gateway.codecs.openai_chat.stream import Encoder as ChatEncoder
from gateway.codecs.openai_responses.stream import Encoder as ResponsesEncoder
from gateway.codecs.reply import Usage
from tests.codecs.test_openai_responses_reply import Dialect, Request
from tests.openai_document import sse_events

URL = {"type": "url_citation", "url": "https://w.example", "title": "W",
       "start_index": 0, "end_index": 6}  # fmt: skip
FILE = {"type": "file_citation", "file_id": "f", "filename": "a.txt", "index": 0}


def _answer(*extra: object) -> list:
    """A one-text answer (part 1), with `extra` events after its text part opens."""
    return [ev.Start("msg_1", "claude"), ev.PartStart(1, "text"), *extra,
            ev.TextDelta(1, "Sunny."), ev.PartStop(1), ev.Stop("end", "end_turn"),
            ev.UsageEvent(Usage(5, 2)), ev.End()]  # fmt: skip


class _Serves(BaseHTTPRequestHandler):
    """Answers any POST with the server's `body` as an event stream."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args) -> None:
        pass


def _read_with_the_anthropic_sdk(raw: bytes):
    """The official SDK's stream helper reading `raw` over loopback: the final message."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Serves)
    server.body = raw
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with anthropic.Anthropic(base_url=url, api_key="k", max_retries=0) as client:
            ask = {"role": "user", "content": "Weather?"}
            with client.messages.stream(model="claude", max_tokens=9, messages=[ask]) as stream:
                return stream.get_final_message()
    finally:
        server.shutdown()
        server.server_close()


def test_a_messages_stream_names_what_it_cannot_show_and_the_anthropic_sdk_reads_it():
    cited = [ev.Citation(1, FILE), ev.Citation(1, URL)]
    events = _answer(ev.Block(0, "server_tool_use"), *cited)
    raw = b"".join(Encoder("claude", 5).feed(events))
    names = b": x-keyrelay-ignored: server_tool_use, citations (file_citation)\n\n"
    assert raw.count(b"x-keyrelay-ignored") == 1
    assert names + b"event: message_delta\n" in raw  # before the last events
    message = _read_with_the_anthropic_sdk(raw)
    assert message.content[0].text == "Sunny." and message.stop_reason == "end_turn"
    assert [c.type for c in message.content[0].citations] == ["web_search_result_location"]

    plain = b"".join(Encoder("claude", 5).feed(_answer()))
    assert b"x-keyrelay-ignored" not in plain
    assert _read_with_the_anthropic_sdk(plain).content[0].text == "Sunny."


def test_each_name_is_given_once_on_one_line_whatever_the_upstream_calls_it():
    hostile = "evil\r\n\r\ndata: {}\n\nevent: message_stop"
    start = {"type": "content_block_start", "index": 0, "content_block": {"type": hostile}}
    events = Decoder().feed([b"data: " + orjson.dumps(start) + b"\n\n"] * 2)
    assert events == [ev.Block(0, hostile), ev.Block(0, hostile)]
    raw = b"".join(ChatEncoder("m").feed(_answer(*events)))
    (comment,) = [line for line in raw.split(b"\n") if b"x-keyrelay-ignored" in line]
    assert comment == b": x-keyrelay-ignored: evil    data: {}  event: message_stop"
    assert [data for _, data in sse_events(raw)][-1] == b"[DONE]"  # nothing else became one
    assert all(b"evil" not in data for _, data in sse_events(raw))


def test_a_responses_stream_names_citations_of_a_part_that_shows_no_text():
    encoder = ResponsesEncoder(Dialect(), Request())
    events = [ev.PartStart(2, "thinking"), ev.ThinkingDelta(2, "hm"), ev.Citation(2, FILE)]
    raw = b"".join(encoder.feed(_answer(*events)))
    assert b": x-keyrelay-ignored: citations (file_citation)\n\nevent: response.completed" in raw
    assert b"x-keyrelay-ignored" not in b"".join(
        ResponsesEncoder(Dialect(), Request()).feed(_answer())
    )

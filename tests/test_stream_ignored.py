"""A translated stream names what its client's format cannot show (an Anthropic server
tool's blocks, citations with no twin) in an SSE comment before its last events, where a
whole answer has its `x-keyrelay-ignored` header; a stream that leaves nothing out has no
such comment. The official openai SDK reads both streams (its stream helpers, over real
HTTP); the raw bytes it read are kept by the transport under it, and every event in them
is checked against OpenAI's document."""

from __future__ import annotations

import re

import httpx2 as httpx  # the HTTP library under the openai SDK
import openai
import pytest

from tests.conftest import MASTER_KEY
from tests.fake_anthropic import FakeAnthropic
from tests.fake_anthropic import Reply as ClaudeReply
from tests.test_conformance import check

CLAUDE = "sk-ant-api03-streamnames-aaaaaaaaaaaa"
MODEL = "claude-sonnet-4-5"
WEB = {"type": "web_search_result_location", "url": "https://weather.example/lagos",
       "title": "Lagos", "cited_text": "Sunny, 31°C", "encrypted_index": "idx-1"}  # fmt: skip
CHAR = {"type": "char_location", "cited_text": "x", "document_index": 0,
        "document_title": None, "start_char_index": 0, "end_char_index": 1}  # fmt: skip
SEARCHED = [
    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
     "input": {"query": "Lagos weather"}},
    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
        {"type": "web_search_result", "url": "https://weather.example/lagos",
         "title": "Lagos", "encrypted_content": "enc-1", "page_age": None}]},
    {"type": "text", "text": "It is sunny in Lagos.", "citations": [WEB]},
    {"type": "text", "text": " As your file says.", "citations": [CHAR]},
]  # fmt: skip
ANSWER = "It is sunny in Lagos. As your file says."
COMMENT = re.compile(rb"^: x-keyrelay-ignored: (.*)$", re.MULTILINE)


class Tee(httpx.BaseTransport):
    """A real HTTP transport that keeps a copy of every response body as it is read."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.raw = bytearray()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Copied(response.stream, self.raw),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


class _Copied(httpx.SyncByteStream):
    def __init__(self, stream, into: bytearray) -> None:
        self.stream, self.into = stream, into

    def __iter__(self):
        for chunk in self.stream:
            self.into.extend(chunk)
            yield chunk

    def close(self) -> None:
        self.stream.close()


@pytest.fixture
def tee():
    return Tee()


@pytest.fixture
def sdk(server, tee):
    """The official OpenAI SDK, pointed at KeyRelay by base_url, reading through `tee`."""
    client = openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key=MASTER_KEY,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(transport=tee),
    )
    yield client
    client.close()


@pytest.fixture
def claude(admin):
    with FakeAnthropic([CLAUDE]) as fake:
        admin.add_key(CLAUDE, fake.base_url, provider="anthropic")
        yield fake


def _read(tee: Tee) -> bytes:
    raw = bytes(tee.raw)
    tee.raw.clear()
    return raw


def _before_last(raw: bytes, last: bytes) -> bytes:
    """The SSE block right before the block that starts with `last`."""
    blocks = raw.replace(b"\r\n", b"\n").split(b"\n\n")
    (at,) = [number for number, block in enumerate(blocks) if block.startswith(last)]
    return blocks[at - 1]


def test_a_chat_stream_names_the_blocks_and_citations_it_leaves_out(sdk, tee, claude):
    """Chat has no server tools and no citations in its stream: each is named once in a
    comment before `[DONE]`; the SDK reads the answer; every chunk conforms."""
    messages = [{"role": "user", "content": "Weather in Lagos?"}]
    claude.script(CLAUDE, [ClaudeReply.of_blocks(SEARCHED), ClaudeReply.ok("Plain answer.")])
    with sdk.chat.completions.stream(model=MODEL, messages=messages) as stream:
        for _ in stream:
            pass
        completion = stream.get_final_completion()
    assert completion.choices[0].message.content == ANSWER
    raw = _read(tee)
    assert COMMENT.findall(raw) == [
        b"server_tool_use, web_search_tool_result, "
        b"citations (web_search_result_location), citations (char_location)"
    ]
    assert COMMENT.match(_before_last(raw, b"data: [DONE]"))
    check("/v1/chat/completions", 200, "text/event-stream", raw)

    with sdk.chat.completions.stream(model=MODEL, messages=messages) as stream:
        for _ in stream:
            pass
        completion = stream.get_final_completion()
    assert completion.choices[0].message.content == "Plain answer."
    plain = _read(tee)
    assert plain.endswith(b"data: [DONE]\n\n") and b"x-keyrelay-ignored" not in plain


def test_a_responses_stream_names_what_it_leaves_out_and_carries_the_rest(sdk, tee, claude):
    """A Responses stream carries the web-search citation (its url_citation) and names the
    server tool's blocks and the citation with no twin before `response.completed`."""
    claude.script(CLAUDE, [ClaudeReply.of_blocks(SEARCHED), ClaudeReply.ok("Plain answer.")])
    with sdk.responses.stream(model=MODEL, input="Weather in Lagos?") as stream:
        kinds = [event.type for event in stream]
        response = stream.get_final_response()
    assert response.output_text == ANSWER and kinds[-1] == "response.completed"
    cited = [a for item in response.output for part in item.content for a in part.annotations]
    assert [(a.type, a.url) for a in cited] == [("url_citation", WEB["url"])]
    raw = _read(tee)
    assert COMMENT.findall(raw) == [
        b"server_tool_use, web_search_tool_result, citations (char_location)"
    ]
    assert COMMENT.match(_before_last(raw, b"event: response.completed"))
    check("/v1/responses", 200, "text/event-stream", raw)

    with sdk.responses.stream(model=MODEL, input="Weather in Lagos?") as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().output_text == "Plain answer."
    assert b"x-keyrelay-ignored" not in _read(tee)


def test_a_broken_stream_names_what_it_left_out_before_its_error(server, http, claude):
    """An upstream stream cut after a server tool's block: the chat client's stream names
    the block, then ends with the error event its SDK raises on."""
    claude.script(CLAUDE, [ClaudeReply("cut", blocks=SEARCHED)])
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "?"}]}
    answer = http.request(
        "POST",
        server.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert answer.status == 200
    assert COMMENT.findall(answer.data) == [b"server_tool_use"]
    assert _before_last(answer.data, b'data: {"error"').startswith(b": x-keyrelay-ignored: ")
    check("/v1/chat/completions", 200, "text/event-stream", answer.data)

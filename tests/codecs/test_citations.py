"""Citations and blocks only one format has: carried to their twin, or named."""

from __future__ import annotations

import orjson
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from gateway.codecs import events as ev
from gateway.codecs.anthropic import reply as anthropic
from gateway.codecs.anthropic.stream import Decoder, Encoder
from gateway.codecs.citations import as_anthropic, as_chat, as_responses
from gateway.codecs.openai_chat import reply as chat
from gateway.codecs.openai_responses.stream import Encoder as ResponsesEncoder
from gateway.codecs.reply import Block, Choice, Reply, Text, Thinking
from gateway.codecs.wire import unrendered
from tests.codecs.test_openai_responses_reply import Dialect, Request
from tests.openai_document import assert_conforms

TEXT = "Lagos is sunny today."
FLAT = {"type": "url_citation", "url": "https://w.example", "title": "W",
        "start_index": 9, "end_index": 14}  # fmt: skip
NESTED = {"type": "url_citation", "url_citation": {k: v for k, v in FLAT.items() if k != "type"}}
WEB = {"type": "web_search_result_location", "url": "https://w.example", "title": "W",
       "cited_text": "sunny", "encrypted_index": "i1"}  # fmt: skip
CHAR = {"type": "char_location", "cited_text": "x", "document_index": 0,
        "document_title": None, "start_char_index": 0, "end_char_index": 1}  # fmt: skip


def test_an_openai_url_citation_becomes_a_web_search_citation_of_its_span():
    for shape in (FLAT, NESTED):
        (cited,), lost = as_anthropic([shape], TEXT)
        assert lost == [] and cited["type"] == "web_search_result_location"
        assert (cited["url"], cited["title"], cited["cited_text"]) == (
            "https://w.example",
            "W",
            "sunny",
        )


def test_a_web_search_citation_becomes_a_url_citation_of_the_whole_text():
    (cited,), lost = as_responses([WEB], TEXT)
    whole = {"start_index": 0, "end_index": len(TEXT)}
    assert lost == [] and cited == {"type": "url_citation", "url": "https://w.example",
                                    "title": "W", **whole}  # fmt: skip
    (nested,), _ = as_chat([WEB], TEXT, 10)
    assert nested["url_citation"]["start_index"] == 10
    assert nested["url_citation"]["end_index"] == 10 + len(TEXT)


def test_citations_without_a_twin_are_named():
    assert as_responses([CHAR], TEXT) == ([], ["char_location"])
    file = {"type": "file_citation", "file_id": "f", "filename": "a", "index": 0}
    assert as_anthropic([file], TEXT) == ([], ["file_citation"])
    assert as_chat([file], TEXT, 0) == ([], ["file_citation"])


def test_a_chat_answers_annotations_reach_a_messages_client_strictly_valid():
    completion = {"id": "chatcmpl-1", "model": "gpt-4o", "choices": [{"index": 0,
                  "finish_reason": "stop", "message": {"role": "assistant", "content": TEXT,
                  "annotations": [NESTED]}}]}  # fmt: skip
    internal = chat.decode(completion)
    message = anthropic.encode(internal, "gpt-4o")
    Message.model_validate(message, strict=True)
    assert message["content"][0]["citations"][0]["cited_text"] == "sunny"
    assert unrendered(internal, "anthropic") == []
    assert chat.encode(internal)["choices"][0]["message"]["annotations"] == [NESTED]


def test_server_tool_blocks_go_back_to_a_messages_client_and_are_named_to_others():
    blocks = [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": TEXT, "citations": [CHAR]},
    ]
    message = {"id": "msg_1", "model": "claude", "content": blocks, "stop_reason": "end_turn"}
    internal = anthropic.decode(message)
    assert [type(p) for p in internal.choices[0].parts] == [Block, Block, Thinking, Text]
    assert anthropic.encode(internal)["content"] == blocks  # nothing lost
    assert unrendered(internal, "anthropic") == []
    names = ["server_tool_use", "web_search_tool_result", "citations (char_location)"]
    assert unrendered(internal, "openai_responses") == names
    assert unrendered(internal, "openai") == [*names[:2], "redacted_thinking", names[2]]


def test_a_plain_answer_names_nothing():
    internal = Reply(choices=[Choice(0, [Text(TEXT, [WEB]), Thinking("hm", "sig")])])
    for client in ("openai", "openai_responses", "anthropic"):
        assert unrendered(internal, client) == []


def _named(kind: str, body: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


CITED_STREAM = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": "", "citations": []}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "citations_delta", "citation": WEB}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": TEXT}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                       "stop_sequence": None}, "usage": {"output_tokens": 5}}),
    ("message_stop", {"type": "message_stop"}),
]  # fmt: skip


def test_a_streamed_web_search_citation_reaches_a_responses_and_a_messages_client():
    events = Decoder().feed([_named(kind, body) for kind, body in CITED_STREAM])
    assert ev.Citation(0, WEB) in events
    encoder = ResponsesEncoder(Dialect(), Request())
    bodies = [orjson.loads(e.split(b"data: ", 1)[1]) for e in encoder.feed(events)]
    for body in bodies:
        if "response" not in body:  # the response object is the (test) dialect's
            assert_conforms("ResponseStreamEvent", body)
    (added,) = [b for b in bodies if b["type"] == "response.output_text.annotation.added"]
    cited = {"type": "url_citation", "url": "https://w.example", "title": "W",
             "start_index": 0, "end_index": len(TEXT)}  # fmt: skip
    assert added["annotation"] == cited and added["annotation_index"] == 0
    (done,) = [b for b in bodies if b["type"] == "response.content_part.done"]
    assert done["part"]["annotations"] == [cited]
    again = [orjson.loads(e.split(b"data: ", 1)[1]) for e in Encoder().feed(events)]
    deltas = [e["delta"] for e in again if e["type"] == "content_block_delta"]
    assert deltas[0] == {"type": "citations_delta", "citation": WEB}
    for body in again:
        if body["type"] != "ping":
            TypeAdapter(RawMessageStreamEvent).validate_json(orjson.dumps(body), strict=True)

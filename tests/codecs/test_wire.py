"""Which codec reads which format: a chat answer decoded once for a client of another
format, and the framed internal-event stream a CLI hands on."""

from __future__ import annotations

from gateway.codecs import events as ev
from gateway.codecs.reply import Usage
from gateway.codecs.wire import INTERNAL, InternalStream, decoded, framed
from gateway.ledger.usage import Usage as Booked
from gateway.providers.base import UpstreamReply
from gateway.providers.openai_sse import SSEFilter

EVENTS = [
    ev.Start("r1", "m"),
    ev.PartStart(0, "thinking"),
    ev.ThinkingDelta(0, "hm"),
    ev.PartStop(0),
    ev.PartStart(1, "tool_call", id="c1", name="look"),
    ev.ArgumentsDelta(1, "{}"),
    ev.PartStop(1),
    ev.PartStart(2, "text"),
    ev.TextDelta(2, "hé"),
    ev.PartStop(2),
    ev.Stop("end", "stop"),
    ev.UsageEvent(Usage(10, 4, cache_read=3, cache_write=2)),
    ev.End(),
]


def test_a_framed_stream_reads_back_its_events_usage_and_text_across_any_split():
    data = framed(EVENTS)
    for cut in (1, 7, len(data) // 2, len(data) - 1):
        reader = InternalStream()
        got = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert got == EVENTS and reader.done
        assert reader.read_usage() == Booked(10, 4, cache_write=2, cache_read=3)
        assert (reader.completion_text(), reader.billable_text()) == ("hé", "hmlook{}hé")


def test_a_framed_stream_skips_what_is_not_an_event_and_is_not_done_before_its_end():
    reader = InternalStream()
    assert reader.feed(b"data: {}\n\n" + framed(EVENTS[:3])) == EVENTS[:3]
    assert not reader.done and reader.read_usage() is None


def test_a_chat_reply_is_left_as_it_is_for_a_chat_client_and_for_an_error():
    whole = UpstreamReply(200, {}, b'{"choices": []}')
    assert decoded(whole, "openai") is whole and whole.format == "openai"
    failed = UpstreamReply(400, {}, b'{"error": {"message": "no"}}', error="no")
    assert decoded(failed, "anthropic").format == "openai" and failed.reply is None
    assert decoded(whole, "anthropic").format == INTERNAL and whole.reply.choices == []


def test_a_responses_passthrough_is_left_as_it_is():
    streamed = UpstreamReply(200, {}, stream=SSEFilter(False), format="openai_responses")
    reader = streamed.stream
    decoded(streamed, "openai_responses")
    assert streamed.stream is reader and streamed.format == "openai_responses"

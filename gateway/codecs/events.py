"""A streamed reply in the gateway's terms: the events every stream format is made of.

A stream decoder turns its format's SSE events into these, an encoder turns them into its
client's. Parts are numbered across the stream (`index`) and opened, filled by deltas, and
closed; `choice` says which answer a part belongs to.
"""

from __future__ import annotations

import msgspec

from gateway.codecs.reply import StopReason, Usage


class Start(msgspec.Struct, tag="start"):
    """The answer begins."""

    id: str = ""
    model: str = ""
    usage: Usage | None = None  # what the provider said at the start (the prompt's tokens)


class PartStart(msgspec.Struct, tag="part_start"):
    """A part opens: `kind` is text, thinking, tool_call or refusal."""

    index: int
    kind: str
    choice: int = 0
    id: str = ""  # a tool call's id
    name: str = ""  # a tool call's name
    redacted: str = ""  # a redacted thinking block's data


class TextDelta(msgspec.Struct, tag="text"):
    index: int
    text: str
    choice: int = 0
    logprobs: list[dict] | None = None  # OpenAI's per-token log probabilities of the piece


class ThinkingDelta(msgspec.Struct, tag="thinking"):
    index: int
    text: str
    choice: int = 0


class Signature(msgspec.Struct, tag="signature"):
    index: int
    signature: str
    choice: int = 0


class ArgumentsDelta(msgspec.Struct, tag="arguments"):
    """A piece of a tool call's arguments (JSON text)."""

    index: int
    text: str
    choice: int = 0


class RefusalDelta(msgspec.Struct, tag="refusal"):
    index: int
    text: str
    choice: int = 0


class Citation(msgspec.Struct, tag="citation"):
    """A citation of a text part, in its provider's shape (gateway/codecs/citations.py)."""

    index: int
    annotation: dict
    choice: int = 0


class Block(msgspec.Struct, tag="block"):
    """A block only its provider's format has (Anthropic's `server_tool_use`,
    `web_search_tool_result`…), by its kind: an encoder of another format cannot show it
    and names it as left out (gateway/codecs/stream.py)."""

    index: int
    kind: str
    choice: int = 0


class PartStop(msgspec.Struct, tag="part_stop"):
    index: int
    choice: int = 0


class Stop(msgspec.Struct, tag="stop"):
    """A choice ended, and why (normalized, and the provider's own word)."""

    reason: StopReason | None = None
    raw: str | None = None
    choice: int = 0


class UsageEvent(msgspec.Struct, tag="usage"):
    """The tokens the provider reported (the latest figures replace earlier ones)."""

    usage: Usage


class End(msgspec.Struct, tag="end"):
    """The stream ended as it should."""


class Error(msgspec.Struct, tag="error"):
    """The provider said the stream failed."""

    message: str
    code: str = ""


Event = (
    Start
    | PartStart
    | TextDelta
    | ThinkingDelta
    | Signature
    | ArgumentsDelta
    | RefusalDelta
    | Citation
    | Block
    | PartStop
    | Stop
    | UsageEvent
    | End
    | Error
)

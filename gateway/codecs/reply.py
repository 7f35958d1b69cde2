"""A whole reply in the gateway's terms: what any supported format can say of an answer.

An adapter decodes its provider's reply into a `Reply` once; a dialect encodes it into its
client's format. Nothing a format has is flattened into another's fields on the way:
thinking keeps its signature, text its citations, usage its cache reads and writes.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# The normalized stop reasons; `Reply.raw_stop` keeps the provider's own word.
StopReason = Literal["end", "stop_sequence", "length", "tool_use", "content_filter", "pause"]


class Text(msgspec.Struct, tag="text", omit_defaults=True):
    """Answer text, with what a format attaches to it (citations, log probabilities)."""

    text: str
    annotations: list[dict] = []  # citations / url annotations, in their format's shape
    logprobs: list[dict] | None = None  # OpenAI's per-token log probabilities


class Thinking(msgspec.Struct, tag="thinking", omit_defaults=True):
    """Reasoning: its text and signature, or only encrypted (`redacted`) data."""

    text: str = ""
    signature: str = ""
    redacted: str = ""  # Anthropic's redacted_thinking data / an encrypted reasoning item


class ToolCall(msgspec.Struct, tag="tool_call", omit_defaults=True):
    """A function (tool) call: its arguments as the JSON text the model wrote."""

    id: str
    name: str
    arguments: str = "{}"
    signature: str = ""  # Gemini's thoughtSignature on the call (handed back with it)


class Refusal(msgspec.Struct, tag="refusal"):
    """A refusal the model gave instead of an answer (OpenAI's `refusal`)."""

    text: str


class Block(msgspec.Struct, tag="block"):
    """A block only its provider's format has (Anthropic's `server_tool_use`,
    `web_search_tool_result`…), as it came: handed on to a client of that format, named
    in `x-keyrelay-ignored` to one of another."""

    kind: str
    data: dict


Part = Text | Thinking | ToolCall | Refusal | Block


class Usage(msgspec.Struct, omit_defaults=True):
    """Tokens as the provider reported them. `input` counts every prompt token, cached or
    not (as OpenAI's prompt_tokens does); cache reads and writes are part of it."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0  # part of `output`
    input_details: dict[str, int] = {}  # per modality (text, image, audio…) where given
    output_details: dict[str, int] = {}


class Choice(msgspec.Struct, omit_defaults=True):
    """One answer (OpenAI's choice, Gemini's candidate): its parts in order and why it ended."""

    index: int = 0
    parts: list[Part] = []
    stop: StopReason | None = None
    raw_stop: str | None = None  # the provider's own reason (`end_turn`, `STOP`…)
    stop_sequence: str | None = None


class Reply(msgspec.Struct, omit_defaults=True):
    """A whole answer: id, model, choices, usage, and what only its provider has."""

    id: str = ""
    model: str = ""
    created: int = 0
    choices: list[Choice] = []
    usage: Usage | None = None
    extras: dict = {}  # provider fields no other format has (system_fingerprint…)


def text_of(choice: Choice) -> str:
    """The answer's text of one choice."""
    return "".join(part.text for part in choice.parts if type(part) is Text)


def calls_of(choice: Choice) -> list[ToolCall]:
    """The tool calls of one choice, in order."""
    return [part for part in choice.parts if type(part) is ToolCall]


def stop_with_calls(stop: StopReason | None, called: bool) -> StopReason | None:
    """A turn that called tools ended to have them run, whatever the provider said (LiteLLM
    and other OpenAI-compatible servers say `stop`): a client runs the tools only then."""
    return "tool_use" if called and stop in (None, "end") else stop

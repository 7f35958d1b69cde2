"""The internal request: one chat request whatever format it came in or goes out in.

A superset of what every supported dialect and provider can ask: turns of typed content
parts (text, image, file, audio, tool calls and results, thinking with its signature,
cache marks), tools (functions and a provider's built-ins), the tool choice, the output
format, sampling, the answer's length, reasoning, account hints and streaming. What a
format has beyond it stays in `extra`, so a codec that re-encodes its own format loses
nothing. msgspec Structs: measured the cheapest typed decode on the hot path
(bench/RESULTS.md, "Typed request types").
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Cache(msgspec.Struct, frozen=True, omit_defaults=True):
    """A cache breakpoint (Anthropic's `cache_control`): the prompt up to here is cached."""

    type: str = "ephemeral"
    ttl: str | None = None


class Text(msgspec.Struct, tag="text", omit_defaults=True):
    text: str
    cache: Cache | None = None


class Image(msgspec.Struct, tag="image", omit_defaults=True):
    """An image by URL, or its bytes (base64 `data` of `media_type`)."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None
    cache: Cache | None = None


class File(msgspec.Struct, tag="file", omit_defaults=True):
    """A document: its bytes (base64), a URL, an upstream's file id, or plain text."""

    data: str | None = None
    media_type: str | None = None
    url: str | None = None
    file_id: str | None = None
    text: str | None = None
    name: str | None = None
    cache: Cache | None = None


class Audio(msgspec.Struct, tag="audio", omit_defaults=True):
    data: str
    format: str = "wav"


class ToolCall(msgspec.Struct, tag="tool_call", omit_defaults=True):
    """A call the assistant made; `arguments` is its JSON text, `signature` the thought
    signature an upstream wants back with it."""

    id: str
    name: str
    arguments: str = "{}"
    signature: str | None = None
    cache: Cache | None = None


class ToolResult(msgspec.Struct, tag="tool_result", omit_defaults=True):
    call_id: str
    content: list[Part] = []
    is_error: bool = False
    name: str | None = None
    cache: Cache | None = None


class Thinking(msgspec.Struct, tag="thinking", omit_defaults=True):
    """The model's reasoning, given back on a later turn (`redacted`: its opaque form)."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None


Part = Text | Image | File | Audio | ToolCall | ToolResult | Thinking
Role = Literal["system", "developer", "user", "assistant", "tool"]


class Turn(msgspec.Struct, omit_defaults=True):
    role: Role
    content: list[Part] = []
    name: str | None = None


class Tool(msgspec.Struct, omit_defaults=True):
    """A function the model may call, or (`kind` other than "function") a provider's
    built-in tool (web search, code execution…) with its own settings in `options`."""

    name: str
    kind: str = "function"
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None
    options: dict = {}
    cache: Cache | None = None


class ToolChoice(msgspec.Struct, omit_defaults=True):
    """auto, none, required (any tool), tool (`names[0]`), allowed (only `names`,
    `required` or not); `parallel`: False for one call at a time."""

    mode: Literal["auto", "none", "required", "tool", "allowed"] = "auto"
    names: list[str] = []
    required: bool = False
    parallel: bool | None = None


class Output(msgspec.Struct, omit_defaults=True):
    kind: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict | None = None
    name: str | None = None
    strict: bool | None = None


class Sampling(msgspec.Struct, omit_defaults=True):
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = []
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int | None = None


class Reasoning(msgspec.Struct, omit_defaults=True):
    """`effort` (minimal…high) or a `budget` of tokens; `off`: asked not to think."""

    effort: str | None = None
    budget: int | None = None
    summary: str | None = None
    off: bool = False


class Request(msgspec.Struct, omit_defaults=True):
    """One chat request. `source` is the format it was decoded from; `names` maps the
    internal field names (carry.FIELDS) to the client's own (a refusal names these)."""

    model: str
    turns: list[Turn] = []
    tools: list[Tool] = []
    tool_choice: ToolChoice | None = None
    output: Output | None = None
    sampling: Sampling = msgspec.field(default_factory=Sampling)
    max_tokens: int | None = None
    reasoning: Reasoning | None = None
    metadata: dict | None = None
    user: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    store: bool | None = None
    safety_identifier: str | None = None
    # Asked of OpenAI chat only: a spoken answer, a predicted output, web search options
    # and an answer length hint.
    modalities: list[str] = []
    audio: dict | None = None
    prediction: dict | None = None
    web_search: dict | None = None
    verbosity: str | None = None
    stream: bool = False
    include_usage: bool = False
    cache: Cache | None = None  # a mark on the whole request (Anthropic's top-level one)
    extra: dict = {}
    source: str = ""
    names: dict[str, str] = {}

    def name_of(self, path: str) -> str:
        """A field's path (`messages[2].content[0]`) in the client's own format."""
        if path in self.names:
            return self.names[path]
        head, dot, rest = path.partition(".")
        return self.names[head] + dot + rest if head in self.names else path

    def offered_tools(self) -> list[Tool]:
        """The tools offered: only those `allowed_tools` names, when it names some."""
        choice = self.tool_choice
        if choice is None or choice.mode != "allowed":
            return self.tools
        return [tool for tool in self.tools if tool.name in choice.names]

    def cache_marks(self) -> list[str]:
        """Where the request marks cache breakpoints (internal paths)."""
        found = ["cache_control"] if self.cache is not None else []
        for number, tool in enumerate(self.tools):
            if tool.cache is not None:
                found.append(f"tools[{number}].cache_control")
        for number, turn in enumerate(self.turns):
            for index, part in enumerate(turn.content):
                if getattr(part, "cache", None) is not None:
                    found.append(f"messages[{number}].content[{index}].cache_control")
        return found

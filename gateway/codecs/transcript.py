"""A request's conversation as the texts its messages say: what the readers that want only
its words take (the local token count, a CLI's prompt), read from the internal request
on demand rather than kept beside it.

Each format's turns are read the way the gateway has always counted and told them (as
they read when translated to OpenAI chat messages), so counts and prompts do not change
with the internal form: an Anthropic tool result is a message of its own (said first, and
`Error: ` before a failed one's text), a turn's text blocks are lines of one text, and a
content with other parts (images) keeps its texts apart.
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.codecs.request import File, Image, Request, Text, Thinking, ToolCall, ToolResult

FIXED = ("system", "developer")


class Line(NamedTuple):
    """One message: its role, its content (a text; the texts of a content that has other
    parts too, as a list; None for none) and the tool calls it makes."""

    role: str
    content: str | list[str] | None
    calls: list[ToolCall] = []
    name: str | None = None


def lines(request: Request) -> list[Line]:
    """The request's messages as text, read as its own format's were."""
    if request.source == "anthropic":
        return _anthropic(request)
    if request.source == "openai_responses":
        return _responses(request)
    return _chat(request)


def text_of(content: str | list[str] | None, joiner: str = " ") -> str:
    """A line's content as one text (the texts of a mixed content joined by `joiner`)."""
    if isinstance(content, list):
        return joiner.join(content)
    return content or ""


def _texts(parts: list) -> list[str]:
    return [part.text for part in parts if isinstance(part, Text)]


def _result_text(result: ToolResult) -> str:
    text = "\n".join(_texts(result.content))
    return f"Error: {text}" if result.is_error else text


def _anthropic(request: Request) -> list[Line]:
    out: list[Line] = []
    for turn in request.turns:
        if turn.role in FIXED:
            text = "\n".join(_texts(turn.content))
            if text:
                out.append(Line("system", text))
        elif turn.role == "assistant":
            text = "".join(_texts(turn.content))
            calls = [part for part in turn.content if isinstance(part, ToolCall)]
            out.append(Line("assistant", text or None, calls))
        else:  # the tool results first: they answer the previous turn's calls
            out += [
                Line("tool", _result_text(p)) for p in turn.content if isinstance(p, ToolResult)
            ]
            said = [p for p in turn.content if _said(p)]
            if said:
                texts = [p.text for p in said if not isinstance(p, Image)]
                mixed = any(isinstance(p, Image) for p in said)
                out.append(Line("user", texts if mixed else "\n".join(texts)))
    return out


def _said(part) -> bool:
    """A user block an Anthropic turn says: text, an image, a text document."""
    return isinstance(part, Text | Image) or (isinstance(part, File) and part.text is not None)


def _responses(request: Request) -> list[Line]:
    out: list[Line] = []
    for turn in request.turns:
        calls = [part for part in turn.content if isinstance(part, ToolCall)]
        results = [part for part in turn.content if isinstance(part, ToolResult)]
        if turn.role == "tool" or results:
            out += [Line("tool", _result_text(result)) for result in results]
        elif calls and not _texts(turn.content):  # function_call items join their turn
            if out and out[-1].role == "assistant":
                out[-1].calls.extend(calls)
            else:
                out.append(Line("assistant", None, calls))
        elif turn.content and all(isinstance(p, Thinking) for p in turn.content):
            continue  # a reasoning item handed back: no text of the conversation
        else:
            texts = _texts(turn.content)
            mixed = any(isinstance(p, Image) for p in turn.content)
            content = texts if mixed else "\n".join(texts)
            role = "system" if turn.role in FIXED else turn.role
            if role == "assistant" and out and out[-1].role == "assistant" and not out[-1].content:
                out[-1] = out[-1]._replace(content=content)  # text of a turn whose calls came first
            else:
                out.append(Line(role, content, calls))
    return out


def _chat(request: Request) -> list[Line]:
    out: list[Line] = []
    for turn in request.turns:
        if turn.role == "tool":
            out += [Line("tool", "".join(_texts(p.content)), name=turn.name)
                    for p in turn.content if isinstance(p, ToolResult)]  # fmt: skip
            continue
        texts = _texts(turn.content)
        calls = [part for part in turn.content if isinstance(part, ToolCall)]
        mixed = any(not isinstance(p, Text | ToolCall) for p in turn.content)
        out.append(Line(turn.role, texts if mixed else "".join(texts), calls, turn.name))
    return out

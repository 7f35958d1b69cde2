"""Context pruning (seed 001, issue 12): drop a conversation's oldest turns until its
prompt fits, counted with the offline tokenizer.

Never dropped: system turns (and Anthropic's top-level `system`), the last user turn, and
the conversation's last turn. A turn is a user message, or an assistant message together
with the tool results that answer it (OpenAI `tool` messages; Anthropic user messages
carrying `tool_result` blocks; the internal request's tool turns), so a tool call never
loses its result nor the reverse. An OpenAI chat client's messages and an Anthropic
client's own body are pruned as they are; any other request as internal turns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import orjson

from gateway.codecs.request import File, Request, Text, Thinking, ToolCall, ToolResult, Turn
from gateway.providers.base import ContextOverflow
from gateway.tokens import MESSAGE_OVERHEAD, REPLY_PRIMER, count_text

# Tokens are counted locally and upstreams count their own way: aim a little lower.
MARGIN = 0.97
_FIXED_ROLES = ("system", "developer")


@dataclass(frozen=True)
class Pruned:
    """A conversation with its oldest turns dropped."""

    messages: list
    dropped: int  # messages dropped
    kept: list[int] = field(default_factory=list)  # the indexes of the messages kept


def _block_text(block) -> str:
    """The countable text of a content part or block, whatever the format."""
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind in ("text", "input_text", "output_text"):
        return block.get("text") or ""
    if kind == "thinking":
        return block.get("thinking") or ""
    if kind == "tool_use":
        return (block.get("name") or "") + _json(block.get("input"))
    if kind == "tool_result":
        return content_text(block.get("content"))
    return ""  # images and the like: not counted (the upstream's figure corrects it)


def _json(value) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return ""


def content_text(content) -> str:
    """A message content's text: a string, or a list of parts or blocks."""
    if isinstance(content, list):
        return " ".join(_block_text(block) for block in content)
    return content if isinstance(content, str) else ""


def message_tokens(message) -> int:
    """One message's tokens: its text, its tool calls' names and arguments, framing."""
    if not isinstance(message, dict):
        return 0
    text = content_text(message.get("content"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            text += f" {function.get('name') or ''} {function.get('arguments') or ''}"
    return MESSAGE_OVERHEAD + count_text(text)


def prompt_tokens(messages: list, system=None) -> int:
    """A conversation's tokens (with Anthropic's top-level `system`, if given)."""
    total = REPLY_PRIMER + sum(message_tokens(m) for m in messages)
    return total + (count_text(content_text(system)) if system else 0)


def budget(counted: int, overflow: ContextOverflow, window: int | None, answer: int | None) -> int:
    """Tokens (in local counting) to prune a prompt of `counted` tokens down to: the route's
    window less the answer's room; else the upstream's figures scaled to local counting;
    else its limit; else half. Always less than `counted`, so each round drops a turn."""
    room = overflow.answer if overflow.answer is not None else (answer or 0)
    options = []
    if window:
        options.append(int((window - (answer or 0)) * MARGIN))
    if overflow.limit and overflow.used:
        answer_room = overflow.answer or 0  # "resulted in N tokens" counts the prompt alone
        options.append(int(counted * (overflow.limit - answer_room) / overflow.used * MARGIN))
    elif overflow.limit:
        options.append(int((overflow.limit - room) * MARGIN))
    options.append(counted // 2)
    return next(b for b in options if b < counted)


def prune_chat(messages: list, target: int) -> Pruned | None:
    """OpenAI chat messages with the oldest turns dropped until they fit `target` tokens;
    None when even the turns that must stay do not fit (or nothing can go)."""

    def attaches(message) -> bool:
        return message.get("role") == "tool"

    def user_turn(message) -> bool:
        return message.get("role") == "user"

    return _prune(messages, target, attaches, user_turn, None)


def prune_anthropic(body: dict, target: int) -> tuple[dict, int] | None:
    """An Anthropic Messages body with its oldest turns dropped ((body, dropped)), or None."""

    def results(message) -> bool:
        content = message.get("content")
        return isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        )

    def user_turn(message) -> bool:
        content = message.get("content")
        if message.get("role") != "user":
            return False
        if not isinstance(content, list):
            return True
        return any(isinstance(b, dict) and b.get("type") != "tool_result" for b in content)

    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    pruned = _prune(messages, target, results, user_turn, body.get("system"))
    if pruned is None:
        return None
    return {**body, "messages": pruned.messages}, pruned.dropped


def prune_typed(request: Request, target: int) -> tuple[Request, int] | None:
    """The internal request with its oldest turns dropped ((request, turns dropped)), or
    None. A tool turn, or a user turn of tool results only, goes with the call it answers;
    a refusal still names the client's own item of each turn kept."""

    def results(turn: Turn) -> bool:
        return turn.role == "tool" or (
            bool(turn.content) and all(isinstance(p, ToolResult) for p in turn.content)
        )

    def user_turn(turn: Turn) -> bool:
        return turn.role == "user" and any(not isinstance(p, ToolResult) for p in turn.content)

    kept = _prune(request.turns, target, results, user_turn, None, turn_tokens, _role)
    if kept is None:
        return None
    names = {k: v for k, v in request.names.items() if not k.startswith("messages[")}
    for now, before in enumerate(kept.kept):
        if f"messages[{before}]" in request.names:
            names[f"messages[{now}]"] = request.names[f"messages[{before}]"]
    pruned = msgspec.structs.replace(request, turns=kept.messages, names=names)
    return pruned, kept.dropped


def turn_tokens(turn: Turn) -> int:
    """One internal turn's tokens: its texts, tool calls and results, thinking, framing."""
    return MESSAGE_OVERHEAD + count_text(" ".join(_part_text(part) for part in turn.content))


def typed_tokens(request: Request) -> int:
    """An internal request's conversation tokens, as pruning counts them."""
    return REPLY_PRIMER + sum(turn_tokens(turn) for turn in request.turns)


def _part_text(part) -> str:
    if isinstance(part, Text | Thinking):
        return part.text
    if isinstance(part, ToolCall):
        return f"{part.name}{part.arguments}"
    if isinstance(part, ToolResult):
        return " ".join(_part_text(inner) for inner in part.content)
    if isinstance(part, File) and part.text is not None:
        return part.text
    return ""  # images and the like: not counted (the upstream's figure corrects it)


def _role(message) -> str | None:
    return message.role if isinstance(message, Turn) else message.get("role")


def _prune(
    messages, target, attaches, user_turn, system, size=message_tokens, role=_role
) -> Pruned | None:
    """Drop whole turns, oldest first, keeping fixed turns, the last user turn and the
    last turn; a turn left at the front that is not a user's goes too (Anthropic wants a
    conversation to start with the user). `size` counts one message, `role` reads its."""
    if not isinstance(messages, list) or not all(isinstance(m, dict | Turn) for m in messages):
        return None
    turns: list[list[int]] = []
    last_user = None
    for index, message in enumerate(messages):
        if role(message) in _FIXED_ROLES:
            continue
        if attaches(message) and turns:
            turns[-1].append(index)
        else:
            turns.append([index])
        if user_turn(message):
            last_user = len(turns) - 1
    keep = {len(turns) - 1, last_user}
    sizes = [sum(size(messages[i]) for i in turn) for turn in turns]
    total = REPLY_PRIMER + sum(size(m) for m in messages)
    total += count_text(content_text(system)) if system else 0
    gone: set[int] = set()
    for number in range(len(turns)):
        if total <= target:
            break
        if number not in keep:
            gone.add(number)
            total -= sizes[number]
    if total > target or not gone:
        return None
    first = 0
    while first in gone:
        first += 1
    while first and first not in keep and not user_turn(messages[turns[first][0]]):
        gone.add(first)  # the front of what is left is no user turn: it goes too
        first += 1
        while first in gone:
            first += 1
    dropped = {i for number in gone for i in turns[number]}
    kept = [i for i in range(len(messages)) if i not in dropped]
    return Pruned([messages[i] for i in kept], len(dropped), kept)

"""Offline token counting for usage the upstream did not report (cut or abandoned streams)."""

from __future__ import annotations

import functools
import warnings

# Per-message framing tokens in OpenAI chat prompts (role markers and separators).
MESSAGE_OVERHEAD = 3
REPLY_PRIMER = 3


@functools.cache
def _encoding():
    with warnings.catch_warnings():
        # bpe-openai 0.1.4 reads its bundled data with a deprecated importlib call.
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        # o200k_base is the tokenizer of current OpenAI models; for other vendors'
        # models it is an estimate, and the log row says so.
        return bpe_openai.get_encoding("o200k_base")


def warm_up() -> None:
    """Load the tokenizer now (about a second) rather than in the middle of a request."""
    _encoding()


def count_text(text: str) -> int:
    """Tokens in a piece of text."""
    return len(_encoding().encode(text)) if text else 0


def _content_text(content) -> str:
    """The text of a message's content, whether a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def quick_prompt_estimate(messages: list) -> int:
    """A prompt's tokens guessed from its length (about four characters a token), for a
    figure that must be there at once and is corrected later (a stream's first event):
    the tokenizer costs ~0.4 ms on a short prompt and milliseconds on an agent's."""
    chars = sum(len(_content_text(m.get("content"))) for m in messages if isinstance(m, dict))
    return REPLY_PRIMER + MESSAGE_OVERHEAD * len(messages) + chars // 4


def count_prompt(messages: list) -> int:
    """Estimated prompt tokens of a chat request's messages."""
    total = REPLY_PRIMER
    for message in messages:
        if isinstance(message, dict):
            total += MESSAGE_OVERHEAD + count_text(_content_text(message.get("content")))
            if message.get("name"):
                total += 1
    return total

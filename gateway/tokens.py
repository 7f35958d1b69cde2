"""Offline token counting for usage the upstream did not report (cut or abandoned streams)."""

from __future__ import annotations

import functools
import logging
import warnings

from gateway.codecs.transcript import lines, text_of

# Per-message framing tokens in OpenAI chat prompts (role markers and separators).
MESSAGE_OVERHEAD = 3
REPLY_PRIMER = 3
# The tokenizer refuses long inputs (1M characters, 200k tokens in one call) and takes
# time on long runs without whitespace: text is counted in pieces of at most this many
# characters, cut at whitespace where there is some. A run cut in two may count a token
# more at the cut; an estimate.
PIECE_CHARS = 16_384
# Past this many characters the text is estimated from its length (four characters a
# token) rather than tokenized: a figure in milliseconds whatever the client sent.
MAX_TOKENIZED_CHARS = 4_000_000
log = logging.getLogger(__name__)


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
    """Tokens in a piece of text; never raises (an estimate from its length when the
    tokenizer cannot count it)."""
    if not isinstance(text, str) or not text:
        return 0
    if len(text) > MAX_TOKENIZED_CHARS:
        return _length_estimate(text)
    try:
        encode = _encoding().encode
        # Text that reads like a special token ("<|endoftext|>") is counted as plain text.
        return sum(len(encode(piece, disallowed_special=())) for piece in _pieces(text))
    except Exception:  # the tokenizer's own limits: an estimate is good enough here
        log.warning("token count estimated from length (%d characters)", len(text))
        return _length_estimate(text)


def _length_estimate(text: str) -> int:
    return (len(text) + 3) // 4


def _pieces(text: str):
    """`text` in pieces of at most PIECE_CHARS characters, cut after whitespace when the
    piece has some."""
    start, size = 0, len(text)
    while size - start > PIECE_CHARS:
        end = start + PIECE_CHARS
        cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
        end = cut + 1 if cut > start else end
        yield text[start:end]
        start = end
    yield text[start:]


def _content_text(content) -> str:
    """The text of a message's content, whether a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (part.get("text") for part in content if isinstance(part, dict))
        return " ".join(text for text in texts if isinstance(text, str))
    return ""


def quick_prompt_estimate(messages: list) -> int:
    """A prompt's tokens guessed from its length (about four characters a token), for a
    figure that must be there at once and is corrected later (a stream's first event):
    the tokenizer costs ~0.4 ms on a short prompt and milliseconds on an agent's."""
    chars = sum(len(_content_text(m.get("content"))) for m in messages if isinstance(m, dict))
    return REPLY_PRIMER + MESSAGE_OVERHEAD * len(messages) + chars // 4


def count_request(request) -> int:
    """Estimated prompt tokens of an internal request (gateway/codecs/request.py): its
    messages' texts, counted as `count_prompt` counts a chat request's."""
    said = lines(request)
    total = REPLY_PRIMER + MESSAGE_OVERHEAD * len(said)
    return total + sum(count_text(text_of(line.content)) + bool(line.name) for line in said)


def quick_request_estimate(request) -> int:
    """`quick_prompt_estimate` of an internal request."""
    said = lines(request)
    chars = sum(len(text_of(line.content)) for line in said)
    return REPLY_PRIMER + MESSAGE_OVERHEAD * len(said) + chars // 4


def count_prompt(messages: list) -> int:
    """Estimated prompt tokens of a chat request's messages."""
    total = REPLY_PRIMER
    for message in messages:
        if isinstance(message, dict):
            total += MESSAGE_OVERHEAD + count_text(_content_text(message.get("content")))
            if message.get("name"):
                total += 1
    return total

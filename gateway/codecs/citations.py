"""Citations across formats: an Anthropic web-search citation and an OpenAI URL citation
are twins, so each is carried into the other's shape; a citation kind the client's format
has no twin for is named (x-keyrelay-ignored), never dropped without a word.

Text keeps its citations in the shape its provider wrote them (`Text.annotations`): an
Anthropic citation cites its whole text block; an OpenAI one a span of its text.
"""

from __future__ import annotations

# OpenAI's own annotation kinds (the Responses API's, flat; chat nests a url_citation).
OPENAI = ("url_citation", "file_citation", "container_file_citation", "file_path")
# Anthropic's citation kinds of a text block.
ANTHROPIC = (
    "char_location",
    "page_location",
    "content_block_location",
    "web_search_result_location",
    "search_result_location",
)


def _url(annotation: dict) -> dict | None:
    """A URL citation's fields, flat, from either OpenAI shape (None: not one)."""
    if annotation.get("type") != "url_citation":
        return None
    nested = annotation.get("url_citation")
    return nested if isinstance(nested, dict) else annotation


def as_responses(annotations: list, text: str) -> tuple[list[dict], list[str]]:
    """An output_text's annotations, and the kinds it goes without."""
    out, lost = [], []
    for annotation in annotations:
        kind = annotation.get("type")
        flat = _url(annotation)
        if flat is not None:
            out.append(_url_citation(flat, 0, len(text)))
        elif kind in OPENAI:
            out.append(annotation)
        elif kind == "web_search_result_location":
            out.append(_url_citation(annotation, 0, len(text), whole=True))
        else:
            lost.append(str(kind))
    return out, lost


def as_chat(annotations: list, text: str, offset: int) -> tuple[list[dict], list[str]]:
    """A chat message's annotations for a text that starts at `offset` of its content."""
    flat, lost = as_responses(annotations, text)
    out = []
    for annotation in flat:
        if annotation["type"] != "url_citation":
            lost.append(annotation["type"])  # chat has URL citations only
            continue
        cited = {k: v for k, v in annotation.items() if k != "type"}
        cited["start_index"] += offset
        cited["end_index"] += offset
        out.append({"type": "url_citation", "url_citation": cited})
    return out, lost


def as_anthropic(annotations: list, text: str) -> tuple[list[dict], list[str]]:
    """A text block's citations, and the kinds it goes without."""
    out, lost = [], []
    for annotation in annotations:
        kind = annotation.get("type")
        flat = _url(annotation)
        if kind in ANTHROPIC:
            out.append(annotation)
        elif flat is not None:
            start, end = _span(flat, len(text))
            out.append(
                {
                    "type": "web_search_result_location",
                    "url": str(flat.get("url") or ""),
                    "title": flat.get("title") if isinstance(flat.get("title"), str) else None,
                    "cited_text": text[start:end],
                    "encrypted_index": "",  # Anthropic's own: an OpenAI citation has none
                }
            )
        else:
            lost.append(str(kind))
    return out, lost


def _span(annotation: dict, length: int) -> tuple[int, int]:
    start, end = annotation.get("start_index"), annotation.get("end_index")
    start = start if isinstance(start, int) and 0 <= start <= length else 0
    end = end if isinstance(end, int) and start <= end <= length else length
    return start, end


def _url_citation(annotation: dict, start: int, end: int, whole: bool = False) -> dict:
    if not whole:
        start, end = _span(annotation, end)
    title = annotation.get("title")
    return {
        "type": "url_citation",
        "url": str(annotation.get("url") or ""),
        "title": title if isinstance(title, str) else "",
        "start_index": start,
        "end_index": end,
    }

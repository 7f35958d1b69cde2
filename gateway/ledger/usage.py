"""Tokens of one request, as every layer speaks of them (providers report, accounting books)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Usage:
    """Tokens of one request; `estimated` when counted locally instead of by the upstream."""

    input_tokens: int = 0  # every prompt token, cached or not
    output_tokens: int = 0
    estimated: bool = False
    # Of the input: tokens written to and read from a prompt cache (priced apart).
    cache_write: int = 0
    cache_read: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

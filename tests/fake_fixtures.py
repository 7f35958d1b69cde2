"""Fixtures of fake upstreams that accept given keys, for a test module to name:
`claude = anthropic_fake(CLAUDE)` is a fixture `claude`, a FakeAnthropic closed after
each test."""

from __future__ import annotations

import pytest

from tests.fake_anthropic import FakeAnthropic
from tests.fake_gemini import FakeGemini


def anthropic_fake(*keys: str):
    """A fixture: a fake Anthropic API that accepts `keys`."""

    @pytest.fixture
    def fixture():
        with FakeAnthropic(list(keys)) as fake:
            yield fake

    return fixture


def gemini_fake(*keys: str):
    """A fixture: a fake Gemini API that accepts `keys`."""

    @pytest.fixture
    def fixture():
        with FakeGemini(list(keys)) as fake:
            yield fake

    return fixture

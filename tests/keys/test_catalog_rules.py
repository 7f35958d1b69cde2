"""The model catalog's rules without a server: which models a key serves (declared,
discovered, its provider's list), and which upstream errors mean "no such model"."""

from __future__ import annotations

import json

import pytest

from gateway.keys import catalog
from gateway.policy import KeyAction, Outcome, decide
from gateway.providers import anthropic as anthropic_provider
from gateway.providers import gemini as gemini_provider
from gateway.providers import openai as openai_provider
from gateway.providers.base import model_missing
from gateway.store import KeyRow


def _row(**fields) -> KeyRow:
    values = dict(
        id=1,
        provider="openai",
        name="k",
        base_url="http://x",
        secret_encrypted=b"",
        models=[],
        discovered_models=None,
        daily_token_limit=None,
        status="active",
        cooldown_until=None,
        consecutive_failures=0,
        last_used_at=None,
        used_today=0,
    )
    return KeyRow(**{**values, **fields})


def test_the_catalog_order_declared_discovered_provider():
    assert catalog.served(_row(models=["a"], discovered_models=["b"])) == ["a"]
    assert catalog.served(_row(discovered_models=["b"])) == ["b"]
    assert catalog.served(_row(provider="deepseek")) == ["deepseek-chat", "deepseek-reasoner"]
    assert catalog.served(_row(provider="claude_code")) == ["*"]
    assert catalog.served(_row()) == [] and not _row().serves("gpt-4o")
    assert _row(models=["*"]).serves("anything")
    assert not _row(models=["*"], unserved_models=["gone"]).serves("gone")


@pytest.mark.parametrize(
    ("status", "code", "message", "missing"),
    [
        (404, "model_not_found", "The model `x` does not exist", True),
        (404, None, "models/gpt-4o is not found for API version v1beta", True),
        (404, None, "model: claude-nope", True),
        (404, None, "Not found: POST /v1/chat", False),
        (400, "invalid_request_error", "bad", False),
        (429, "model_not_found", "busy", False),
    ],
)
def test_model_missing_reads_each_provider(status, code, message, missing):
    assert model_missing(status, code, message) is missing


def test_model_not_found_fails_over_without_blame():
    decision = decide(404, missing=True)
    assert decision.outcome is Outcome.MODEL_NOT_FOUND
    assert decision.fail_over and decision.key_action is KeyAction.NOT_SERVED
    assert decide(404).outcome is Outcome.CLIENT_ERROR


@pytest.mark.parametrize(
    ("module", "status", "body", "missing"),
    [
        (openai_provider, 404, {"error": {"message": "no", "code": "model_not_found"}}, True),
        (openai_provider, 404, {"error": {"message": "Invalid URL", "code": None}}, False),
        (
            gemini_provider,
            404,
            {
                "error": {
                    "code": 404,
                    "message": "models/gpt-4o is not found for API version "
                    "v1beta, or is not supported for generateContent.",
                    "status": "NOT_FOUND",
                }
            },
            True,
        ),
        (
            anthropic_provider,
            404,
            {"type": "error", "error": {"type": "not_found_error", "message": "model: gpt-4o"}},
            True,
        ),
        (
            anthropic_provider,
            404,
            {"type": "error", "error": {"type": "not_found_error", "message": "Not found"}},
            False,
        ),
    ],
)
def test_each_adapter_reads_its_providers_model_not_found(module, status, body, missing):
    reply = module.error_reply(status, {}, json.dumps(body).encode())
    assert reply.model_missing is missing

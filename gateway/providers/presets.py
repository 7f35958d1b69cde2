"""Presets: OpenAI-compatible providers known by name. Each is the `openai` adapter with
its own default base URL, its own id in the price table (so a request is priced at that
provider's price, not OpenAI's) and its own name as the models' `owned_by`."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from gateway.providers.base import Credits, Target, Timeouts, UpstreamReply
from gateway.providers.openai import OpenAIAdapter, error_reply, json_object
from gateway.validation import MAX_SQL_INT

# name → (default base URL, genai-prices provider id)
PRESETS: dict[str, tuple[str, str]] = {
    "groq": ("https://api.groq.com/openai/v1", "groq"),
    "together": ("https://api.together.xyz/v1", "together"),
    "openrouter": ("https://openrouter.ai/api/v1", "openrouter"),
    "deepseek": ("https://api.deepseek.com/v1", "deepseek"),
    "mistral": ("https://api.mistral.ai/v1", "mistral"),
    "google-ai-studio-openai": (
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "google",
    ),
}

# The models a preset's key serves until its test lists the upstream's own (a provider
# whose few model ids are stable; the others' lists come from their key test).
PRESET_MODELS: dict[str, tuple[str, ...]] = {
    "deepseek": ("deepseek-chat", "deepseek-reasoner"),
}


class OpenRouterCredits(OpenAIAdapter):
    """OpenRouter reports a key's credit left: `GET /key` (`limit_remaining`, USD)."""

    reports_credits = True

    def check_credits(self, target: Target, timeouts: Timeouts) -> Credits | UpstreamReply:
        response = self.http.request(
            "GET", f"{target.base_url}/key", self._headers(target), timeouts
        )
        body = response.read()
        if response.status >= 300:
            return error_reply(response.status, response.headers, body)
        data = (json_object(body) or {}).get("data")
        if not isinstance(data, dict):
            return error_reply(502, response.headers, b"key info answered without `data`")
        left = data.get("limit_remaining")
        if left is None and isinstance(data.get("limit"), int | float):
            left = data["limit"] - (data.get("usage") or 0)
        if not isinstance(left, int | float) or isinstance(left, bool):
            return Credits()  # a key without a credit limit: nothing to count down
        # Money is exact: the float's shortest decimal form, in micro-dollars.
        micros = int((Decimal(str(left)) * 1_000_000).to_integral_value(ROUND_HALF_UP))
        micros = min(MAX_SQL_INT, max(0, micros))
        return Credits(remaining_credit_micros=micros)


# Presets whose provider has more than the OpenAI wire protocol.
_BASES: dict[str, type[OpenAIAdapter]] = {"openrouter": OpenRouterCredits}


def preset_adapters() -> dict[str, type[OpenAIAdapter]]:
    adapters = {}
    for name, (base_url, price_provider) in PRESETS.items():
        class_name = "".join(part.title() for part in name.split("-")) + "Adapter"
        adapters[name] = type(
            class_name,
            (_BASES.get(name, OpenAIAdapter),),
            {
                "name": name,
                "default_base_url": base_url,
                "price_provider": price_provider,
                "default_models": PRESET_MODELS.get(name, ()),
            },
        )
    return adapters

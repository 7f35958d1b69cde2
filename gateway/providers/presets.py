"""Presets: OpenAI-compatible providers known by name. Each is the `openai` adapter with
its own default base URL, its own id in the price table (so a request is priced at that
provider's price, not OpenAI's) and its own name as the models' `owned_by`."""

from __future__ import annotations

from gateway.providers.openai import OpenAIAdapter

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


def preset_adapters() -> dict[str, type[OpenAIAdapter]]:
    adapters = {}
    for name, (base_url, price_provider) in PRESETS.items():
        class_name = "".join(part.title() for part in name.split("-")) + "Adapter"
        adapters[name] = type(
            class_name,
            (OpenAIAdapter,),
            {"name": name, "default_base_url": base_url, "price_provider": price_provider},
        )
    return adapters

"""The provider registry: provider name → adapter class."""

from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.base import ProviderAdapter
from gateway.providers.cli import ClaudeCodeAdapter, CodexCliAdapter
from gateway.providers.gemini import GeminiAdapter
from gateway.providers.openai import OpenAIAdapter
from gateway.providers.presets import preset_adapters
from gateway.providers.rovodev import RovodevAdapter

ADAPTERS: dict[str, type[ProviderAdapter]] = {
    OpenAIAdapter.name: OpenAIAdapter,
    AnthropicAdapter.name: AnthropicAdapter,
    GeminiAdapter.name: GeminiAdapter,
    RovodevAdapter.name: RovodevAdapter,
    **preset_adapters(),
    ClaudeCodeAdapter.name: ClaudeCodeAdapter,
    CodexCliAdapter.name: CodexCliAdapter,
}
# Each kind's default base URL and its provider id in the price table.
DEFAULT_BASE_URLS = {name: cls.default_base_url for name, cls in ADAPTERS.items()}
PRICE_PROVIDERS = {name: cls.price_provider for name, cls in ADAPTERS.items()}
OWNERS = {name: cls.owned_by or name for name, cls in ADAPTERS.items()}
# A model only one kind serves by default (RovoDev's Sonnet ids) → that kind.
DEFAULT_MODEL_KINDS = {
    model: name for name, cls in ADAPTERS.items() for model in cls.default_models if model != "*"
}


def wording(providers, situation: str) -> str | None:
    """The provider's own words for an error about keys all of one kind (`situation`: a
    key of ProviderAdapter.wording), or None."""
    kinds = set(providers)
    if len(kinds) != 1:
        return None
    adapter = ADAPTERS.get(kinds.pop())
    return adapter.wording.get(situation) if adapter is not None else None

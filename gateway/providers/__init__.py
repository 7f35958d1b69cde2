"""The provider registry: provider name → adapter class."""

from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.base import ProviderAdapter
from gateway.providers.cli import ClaudeCodeAdapter, CodexCliAdapter
from gateway.providers.gemini import GeminiAdapter
from gateway.providers.openai import OpenAIAdapter
from gateway.providers.presets import preset_adapters

ADAPTERS: dict[str, type[ProviderAdapter]] = {
    OpenAIAdapter.name: OpenAIAdapter,
    AnthropicAdapter.name: AnthropicAdapter,
    GeminiAdapter.name: GeminiAdapter,
    **preset_adapters(),
    ClaudeCodeAdapter.name: ClaudeCodeAdapter,
    CodexCliAdapter.name: CodexCliAdapter,
}
# Each kind's default base URL and its provider id in the price table.
DEFAULT_BASE_URLS = {name: cls.default_base_url for name, cls in ADAPTERS.items()}
PRICE_PROVIDERS = {name: cls.price_provider for name, cls in ADAPTERS.items()}

"""The provider registry: provider name → adapter class."""

from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.base import ProviderAdapter
from gateway.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, type[ProviderAdapter]] = {
    OpenAIAdapter.name: OpenAIAdapter,
    AnthropicAdapter.name: AnthropicAdapter,
}

"""Provider protocols and the registry that maps a model prefix to one.

One wire protocol per module; OpenAI-compatible vendors are entries of the OpenAI
protocol with their own default base URL, not code of their own.
"""

from __future__ import annotations

from models.provider_names import OPENAI_COMPATIBLE
from workers.providers.anthropic import AnthropicProtocol
from workers.providers.azure import AzureProtocol
from workers.providers.base import CallOptions, Provider, ProviderResult, Usage
from workers.providers.bedrock import BedrockProtocol
from workers.providers.errors import ProviderError
from workers.providers.gemini import GeminiProtocol
from workers.providers.openai import OpenAIProtocol

__all__ = [
    "REGISTRY",
    "CallOptions",
    "Provider",
    "ProviderError",
    "ProviderResult",
    "Usage",
    "provider_for",
]

REGISTRY: dict[str, Provider] = {
    **{name: OpenAIProtocol(name, base) for name, base in OPENAI_COMPATIBLE.items()},
    "azure": AzureProtocol(),
    "anthropic": AnthropicProtocol(),
    "bedrock": BedrockProtocol(),
    "gemini": GeminiProtocol(),
}


def provider_for(prefix: str) -> Provider:
    return REGISTRY[prefix]

"""Provider protocols and the registry that maps a model prefix to one.

One wire protocol per module; OpenAI-compatible vendors are entries of the OpenAI
protocol with their own default base URL, not code of their own.
"""

from __future__ import annotations

from models.fleet_config import FleetConfig
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
    "check_providers",
    "provider_for",
]

#: OpenAI-compatible vendors: (prefix, default base URL; None = `api_base` required).
OPENAI_COMPATIBLE: dict[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "openai_compatible": None,
    "hosted_vllm": None,
    "ollama_chat": "http://localhost:11434/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together_ai": "https://api.together.xyz/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "xai": "https://api.x.ai/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
}

REGISTRY: dict[str, Provider] = {
    **{name: OpenAIProtocol(name, base) for name, base in OPENAI_COMPATIBLE.items()},
    "azure": AzureProtocol(),
    "anthropic": AnthropicProtocol(),
    "bedrock": BedrockProtocol(),
    "gemini": GeminiProtocol(),
}

#: Providers whose deployments cannot work without an `api_base`.
NEEDS_API_BASE = frozenset(
    {name for name, base in OPENAI_COMPATIBLE.items() if base is None} | {"azure"}
)


def provider_for(prefix: str) -> Provider:
    return REGISTRY[prefix]


def check_providers(config: FleetConfig) -> list[str]:
    """Every deployment's provider must be known, and have a base URL if it needs one."""
    problems = []
    for i, dep in enumerate(config.model_list):
        params = dep.litellm_params
        if params.provider not in REGISTRY:
            problems.append(
                f"model_list[{i}].litellm_params.model: unknown provider {params.provider!r} "
                f"(known: {', '.join(sorted(REGISTRY))})"
            )
        elif params.provider in NEEDS_API_BASE and not params.api_base:
            problems.append(
                f"model_list[{i}].litellm_params.api_base: required for {params.provider}"
            )
    return problems

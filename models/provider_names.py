"""The providers a deployment may name (`<provider>/<model>`), known to every process:
the config loader checks them without importing provider code (workers.providers
holds the protocols)."""

from __future__ import annotations

__all__ = ["NATIVE", "NEEDS_API_BASE", "OPENAI_COMPATIBLE", "PROVIDERS"]

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
#: Providers with a protocol of their own.
NATIVE = frozenset({"azure", "anthropic", "bedrock", "gemini"})
PROVIDERS = frozenset(OPENAI_COMPATIBLE) | NATIVE

#: Providers whose deployments cannot work without an `api_base`.
NEEDS_API_BASE = frozenset(
    {name for name, base in OPENAI_COMPATIBLE.items() if base is None} | {"azure"}
)

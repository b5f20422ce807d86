"""The cost of one call, as Decimal: the deployment's own prices when configured
(LiteLLM's `input_cost_per_token` family), else the maintained `genai-prices`
library. An unknown price is None (and counted), never guessed.

Batch lines run as ordinary calls to the provider, so they are priced as such."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

import genai_prices

from models.fleet_config import LiteLLMParams
from workers.providers.base import Usage

__all__ = ["Price", "price_call"]

log = logging.getLogger(__name__)

#: Our provider prefixes -> genai-prices provider ids (OpenAI-compatible local servers
#: have no list price: they are left unknown unless the deployment sets prices).
PROVIDER_IDS: dict[str, str] = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "gemini": "google",
    "bedrock": "aws",
    "groq": "groq",
    "mistral": "mistral",
    "deepseek": "deepseek",
    "openrouter": "openrouter",
    "xai": "x-ai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
}


@dataclass(frozen=True, slots=True)
class Price:
    cost: Decimal | None
    #: "override" (deployment prices), "genai-prices", or None when unknown.
    source: str | None


def price_call(params: LiteLLMParams, usage: Usage) -> Price:
    override = _override(params, usage)
    if override is not None:
        return Price(override, "override")
    provider_id = PROVIDER_IDS.get(params.provider)
    if provider_id is None:
        return Price(None, None)
    try:
        calculation = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=usage.prompt_tokens,
                output_tokens=usage.completion_tokens,
                cache_read_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_creation_tokens,
            ),
            params.provider_model,
            provider_id=provider_id,
        )
    except LookupError:
        log.info("no known price for %s/%s", params.provider, params.provider_model)
        return Price(None, None)
    return Price(Decimal(calculation.total_price), "genai-prices")


def _override(params: LiteLLMParams, usage: Usage) -> Decimal | None:
    """Deployment prices per token; cached and cache-write tokens at their own price
    when given, else at the input price."""
    if params.input_cost_per_token is None and params.output_cost_per_token is None:
        return None
    input_price = params.input_cost_per_token or Decimal(0)
    cached_price = params.cache_read_input_token_cost
    write_price = params.cache_creation_input_token_cost
    plain = usage.prompt_tokens
    total = Decimal(0)
    if cached_price is not None:
        plain -= usage.cached_tokens
        total += cached_price * usage.cached_tokens
    if write_price is not None:
        plain -= usage.cache_creation_tokens
        total += write_price * usage.cache_creation_tokens
    total += input_price * max(0, plain)
    total += (params.output_cost_per_token or Decimal(0)) * usage.completion_tokens
    return total

"""Cost from genai-prices, overridable per deployment; unknown prices stay unknown."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import genai_prices

from models.fleet_config import LiteLLMParams, parse_fleet_config
from workers.accounting.cost import price_call
from workers.providers.base import Usage


def params(**litellm: Any) -> LiteLLMParams:
    raw = {"model_list": [{"model_name": "g", "litellm_params": litellm}]}
    return parse_fleet_config(raw, {}).model_list[0].litellm_params


def test_gpt_4o_mini_cost_equals_genai_prices() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500)
    price = price_call(params(model="openai/gpt-4o-mini"), usage)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, output_tokens=500),
        "gpt-4o-mini",
        provider_id="openai",
    ).total_price
    assert price.cost == expected == Decimal("0.00045")
    assert price.source == "genai-prices" and isinstance(price.cost, Decimal)


def test_cached_tokens_are_priced_as_cache_reads() -> None:
    usage = Usage(1000, 500, 1500, cached_tokens=200)
    price = price_call(params(model="openai/gpt-4o-mini"), usage)
    assert price.cost == Decimal("0.000435")  # 800 x 0.15/M + 200 x 0.075/M + 500 x 0.6/M


def test_deployment_override_wins() -> None:
    usage = Usage(1000, 500, 1500, cached_tokens=100, cache_creation_tokens=50)
    price = price_call(
        params(
            model="openai/gpt-4o-mini",
            input_cost_per_token="0.000001",
            output_cost_per_token="0.000002",
            cache_read_input_token_cost="0.0000001",
            cache_creation_input_token_cost="0.0000015",
        ),
        usage,
    )
    expected = (
        Decimal("0.000001") * 850
        + Decimal("0.0000001") * 100
        + Decimal("0.0000015") * 50
        + Decimal("0.000002") * 500
    )
    assert price.cost == expected and price.source == "override"


def test_unknown_model_or_provider_is_unknown_not_guessed() -> None:
    usage = Usage(10, 5, 15)
    assert price_call(params(model="openai/no-such-model-xyz"), usage).cost is None
    unknown = price_call(params(model="hosted_vllm/llama", api_base="http://x/v1"), usage)
    assert unknown.cost is None and unknown.source is None

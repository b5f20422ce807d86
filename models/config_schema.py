"""The fleet config's schema: LiteLLM's `model_list` / `router_settings` shape, with
the parts of `litellm_settings`, `general_settings` and `model_info` that llmfleet
honours (models.fleet_config sorts a file's keys into it)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.llmfleet_settings import LlmfleetSettings

__all__ = [
    "CALL_DEFAULTS",
    "PRICE_KEYS",
    "Deployment",
    "FleetConfig",
    "LiteLLMParams",
    "ModelInfo",
    "RouterSettings",
    "Strategy",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: The price keys, in `litellm_params` or (LiteLLM's usual place) in `model_info`.
PRICE_KEYS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
)
#: Call parameters a deployment may set as defaults: a request's own value wins.
CALL_DEFAULTS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "n",
    "logit_bias",
    "response_format",
    "reasoning_effort",
    "user",
)

_TOKEN_LIMITS = frozenset({"max_tokens", "max_completion_tokens"})


class LiteLLMParams(_Strict):
    model: str = Field(min_length=3, pattern=r"^[A-Za-z0-9_.\-]+/.+$")
    api_base: str | None = None
    api_key: SecretStr | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    weight: float | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    max_parallel_requests: int | None = Field(default=None, ge=1)
    tags: tuple[str, ...] = ()
    input_cost_per_token: Decimal | None = Field(default=None, ge=0)
    output_cost_per_token: Decimal | None = Field(default=None, ge=0)
    cache_read_input_token_cost: Decimal | None = Field(default=None, ge=0)
    cache_creation_input_token_cost: Decimal | None = Field(default=None, ge=0)
    drop_params: bool = False
    #: OpenAI: the OpenAI-Organization header. Azure: api-version.
    organization: str | None = None
    api_version: str | None = None
    #: Bedrock: region and credentials (else the standard AWS environment variables).
    aws_region_name: str | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    #: Call defaults (CALL_DEFAULTS), as LiteLLM applies them.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | tuple[str, ...] | None = None
    seed: int | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: int | None = Field(default=None, ge=1)
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    user: str | None = None

    def with_defaults(self, request: dict[str, Any]) -> dict[str, Any]:
        """`request` with this deployment's call defaults where it sets none (a value
        of None counts as unset). The request is not changed."""
        given = {key for key in CALL_DEFAULTS if request.get(key) is not None}
        if given & _TOKEN_LIMITS:
            given |= _TOKEN_LIMITS  # a request's limit of either name replaces the default
        defaults = {
            key: _plain(value)
            for key in CALL_DEFAULTS
            if key not in given and (value := getattr(self, key)) is not None
        }
        return {**request, **defaults} if defaults else request

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def provider_model(self) -> str:
        return self.model.split("/", 1)[1]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    id: str | None = None
    input_cost_per_token: Decimal | None = Field(default=None, ge=0)
    output_cost_per_token: Decimal | None = Field(default=None, ge=0)
    cache_read_input_token_cost: Decimal | None = Field(default=None, ge=0)
    cache_creation_input_token_cost: Decimal | None = Field(default=None, ge=0)


class Deployment(_Strict):
    """One concrete endpoint serving a model group."""

    model_name: str = Field(min_length=1)
    litellm_params: LiteLLMParams
    model_info: ModelInfo = ModelInfo()

    @model_validator(mode="after")
    def _prices_from_model_info(self) -> Deployment:
        """Prices in `model_info` count where `litellm_params` sets none."""
        prices = {
            key: price
            for key in PRICE_KEYS
            if getattr(self.litellm_params, key) is None
            and (price := getattr(self.model_info, key)) is not None
        }
        if not prices:
            return self
        params = self.litellm_params.model_copy(update=prices)
        return self.model_copy(update={"litellm_params": params})

    @property
    def id(self) -> str:
        assert self.model_info.id is not None  # filled by FleetConfig
        return self.model_info.id

    def for_model(self, provider_model: str) -> Deployment:
        """This deployment calling another model (a wildcard deployment's request)."""
        params = self.litellm_params.model_copy(update={"model": provider_model})
        return self.model_copy(update={"litellm_params": params})


Strategy = Literal[
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "cost-based-routing",
    "usage-based-routing",
    "usage-based-routing-v2",
]

#: LiteLLM's policy names, by the error classes they cover.
POLICY_ERRORS = (
    "BadRequestError",
    "AuthenticationError",
    "NotFoundError",
    "TimeoutError",
    "RateLimitError",
    "ContentPolicyViolationError",
    "InternalServerError",
)


class StrategyArgs(_Strict):
    #: latency-based: deployments within (1 + buffer) x the fastest share the traffic.
    lowest_latency_buffer: float = Field(default=0.0, ge=0)
    #: latency-based: how many recent calls make the rolling window.
    window_size: int = Field(default=20, ge=1, le=1000)


class RouterSettings(_Strict):
    routing_strategy: Strategy = "simple-shuffle"
    #: Ours: a strategy per model group, overriding `routing_strategy`.
    model_group_routing_strategy: dict[str, Strategy] = {}
    routing_strategy_args: StrategyArgs = StrategyArgs()
    num_retries: int = Field(default=2, ge=0, le=20)
    timeout: float = Field(default=600.0, gt=0)
    #: Failures per minute a deployment may have before it cools down.
    allowed_fails: int = Field(default=3, ge=0)
    #: Per error class, e.g. {"TimeoutErrorAllowedFails": 10}.
    allowed_fails_policy: dict[str, int] = {}
    #: Seconds a deployment cools down (a 429's Retry-After wins when given).
    cooldown_time: float = Field(default=5.0, gt=0)
    #: Per error class, e.g. {"RateLimitErrorRetries": 5}; else `num_retries`.
    retry_policy: dict[str, int] = {}
    fallbacks: tuple[dict[str, list[str]], ...] = ()
    context_window_fallbacks: tuple[dict[str, list[str]], ...] = ()
    content_policy_fallbacks: tuple[dict[str, list[str]], ...] = ()
    default_fallbacks: tuple[str, ...] = ()
    model_group_alias: dict[str, str] = {}

    @field_validator("allowed_fails_policy", "retry_policy")
    @classmethod
    def _known_policy_names(cls, value: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        suffix = "AllowedFails" if info.field_name == "allowed_fails_policy" else "Retries"
        known = {name + suffix for name in POLICY_ERRORS}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown}; known: {sorted(known)}")
        return value

    def strategy_for(self, group: str) -> Strategy:
        return self.model_group_routing_strategy.get(group, self.routing_strategy)

    def retries_for(self, policy_name: str) -> int:
        return self.retry_policy.get(policy_name + "Retries", self.num_retries)

    def allowed_fails_for(self, policy_name: str) -> int:
        return self.allowed_fails_policy.get(policy_name + "AllowedFails", self.allowed_fails)

    def fallbacks_for(self, kind: str, group: str) -> list[str]:
        """Fallback groups for `group`: `kind` is fallbacks, context_window_fallbacks or
        content_policy_fallbacks; plain fallbacks end with `default_fallbacks`."""
        table: tuple[dict[str, list[str]], ...] = getattr(self, kind)
        out = [g for entry in table for g in entry.get(group, [])]
        if kind == "fallbacks":
            out += [g for g in self.default_fallbacks if g != group and g not in out]
        return out


class FleetConfig(_Strict):
    model_list: tuple[Deployment, ...] = Field(min_length=1)
    router_settings: RouterSettings = RouterSettings()
    #: `litellm_settings.drop_params`: drop unsupported parameters for every deployment.
    drop_params: bool = False
    #: Keys that LiteLLM knows and llmfleet ignores, as dotted paths.
    warnings: tuple[str, ...] = ()
    #: `general_settings.master_key`: the master key when LLMFLEET_MASTER_KEY is unset.
    master_key: SecretStr | None = None
    #: llmfleet's own section (hooks).
    llmfleet_settings: LlmfleetSettings = LlmfleetSettings()

    def group_names(self) -> list[str]:
        return list(dict.fromkeys(d.model_name for d in self.model_list))

    def deployments_for(self, model_group: str) -> list[Deployment]:
        """The deployments serving a requested model name: an exact group, an alias
        (`model_group_alias`), or a wildcard group (`openai/*`, `*`), whose deployments
        call the provider's model of the requested name."""
        model_group = self.router_settings.model_group_alias.get(model_group, model_group)
        exact = [d for d in self.model_list if d.model_name == model_group]
        if exact:
            return exact
        patterns = sorted(
            {d.model_name for d in self.model_list if "*" in d.model_name},
            key=lambda p: -len(p.replace("*", "")),
        )
        for pattern in patterns:
            match = _wildcard_regex(pattern).fullmatch(model_group)
            if match:
                tail = match.group(1)
                return [
                    d.for_model(d.litellm_params.model.replace("*", tail))
                    for d in self.model_list
                    if d.model_name == pattern
                ]
        return []

    def has_group(self, model_group: str) -> bool:
        return bool(self.deployments_for(model_group))


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(r"\*", "(.+)", 1).replace(r"\*", ".*"))

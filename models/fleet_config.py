"""The fleet config: LiteLLM's `model_list` / `router_settings` YAML shape.

A LiteLLM user brings their config unchanged. Keys are sorted three ways:
- ours: modelled and honoured;
- LiteLLM-only: known to LiteLLM but not honoured here, reported as a listed warning;
- unknown: a typo or a foreign key, reported by its path as an error.
Secret references (`os.environ/NAME`) are resolved when the config is loaded, so an
unset variable stops the process at start, not at the first call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from models.litellm_keys import LITELLM_ONLY_PARAMS, LITELLM_ONLY_ROUTER, LITELLM_ONLY_TOP
from models.llmfleet_settings import LlmfleetSettings

__all__ = [
    "ConfigError",
    "Deployment",
    "FleetConfig",
    "RouterSettings",
    "load_fleet_config",
    "parse_fleet_config",
]

ENV_REF = "os.environ/"


class ConfigError(ValueError):
    """The fleet config cannot be used; the message names every offending path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def provider_model(self) -> str:
        return self.model.split("/", 1)[1]


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    id: str | None = None


class Deployment(_Strict):
    """One concrete endpoint serving a model group."""

    model_name: str = Field(min_length=1)
    litellm_params: LiteLLMParams
    model_info: ModelInfo = ModelInfo()

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


def load_fleet_config(path: Path, environ: Mapping[str, str] | None = None) -> FleetConfig:
    """Read and validate the YAML file at `path`."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read fleet config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"fleet config {path} is not valid YAML: {exc}") from exc
    return parse_fleet_config(raw, os.environ if environ is None else environ)


def parse_fleet_config(raw: Any, environ: Mapping[str, str]) -> FleetConfig:
    if not isinstance(raw, dict):
        raise ConfigError("fleet config must be a mapping with a `model_list`")
    errors: list[str] = []
    warnings: list[str] = []
    data: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("model_list", "router_settings"):
            data[key] = value
        elif key == "litellm_settings" and isinstance(value, dict):
            for sub_key, sub_value in value.items():
                if sub_key == "drop_params":
                    data["drop_params"] = sub_value
                else:
                    warnings.append(f"litellm_settings.{sub_key}")
        elif key == "llmfleet_settings":
            data[key] = _sort_keys(value, LlmfleetSettings, frozenset(), key, errors, warnings)
        elif key in LITELLM_ONLY_TOP:
            warnings.append(key)
        else:
            errors.append(f"{key}: unknown top-level key")
    data["model_list"] = _sort_deployments(data.get("model_list"), environ, errors, warnings)
    data["router_settings"] = _sort_keys(
        data.get("router_settings") or {},
        RouterSettings,
        LITELLM_ONLY_ROUTER,
        "router_settings",
        errors,
        warnings,
    )
    if errors:
        raise ConfigError("invalid fleet config:\n  " + "\n  ".join(errors))
    try:
        config = FleetConfig(**data, warnings=tuple(warnings))
    except ValidationError as exc:
        raise ConfigError("invalid fleet config:\n  " + _format_validation(exc)) from None
    return config


def _sort_keys(
    section: Any,
    model: type[BaseModel],
    litellm_only: frozenset[str],
    path: str,
    errors: list[str],
    warnings: list[str],
) -> dict[str, Any]:
    if not isinstance(section, dict):
        errors.append(f"{path}: must be a mapping")
        return {}
    kept: dict[str, Any] = {}
    for key, value in section.items():
        if key in model.model_fields:
            kept[key] = value
        elif key in litellm_only:
            warnings.append(f"{path}.{key}")
        else:
            errors.append(f"{path}.{key}: unknown key")
    return kept


def _sort_deployments(
    model_list: Any, environ: Mapping[str, str], errors: list[str], warnings: list[str]
) -> list[dict[str, Any]]:
    if not isinstance(model_list, list) or not model_list:
        errors.append("model_list: must be a non-empty list of deployments")
        return []
    out: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    for i, entry in enumerate(model_list):
        path = f"model_list[{i}]"
        if not isinstance(entry, dict):
            errors.append(f"{path}: must be a mapping")
            continue
        dep = _sort_keys(entry, Deployment, frozenset(), path, errors, warnings)
        params = _sort_keys(
            dep.get("litellm_params") or {},
            LiteLLMParams,
            LITELLM_ONLY_PARAMS,
            f"{path}.litellm_params",
            errors,
            warnings,
        )
        dep["litellm_params"] = _resolve_env(params, environ, f"{path}.litellm_params", errors)
        info = dict(dep.get("model_info") or {})
        info.setdefault("id", f"{dep.get('model_name', 'model')}-{i}")
        if info["id"] in seen_ids:
            errors.append(f"{path}.model_info.id: duplicate deployment id {info['id']!r}")
        seen_ids.add(info["id"])
        dep["model_info"] = info
        out.append(dep)
    return out


def _resolve_env(
    params: dict[str, Any], environ: Mapping[str, str], path: str, errors: list[str]
) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, str) and value.startswith(ENV_REF):
            name = value[len(ENV_REF) :]
            if name not in environ:
                errors.append(f"{path}.{key}: environment variable {name} is not set")
                continue
            value = environ[name]
        resolved[key] = value
    return resolved


def _format_validation(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"])
        lines.append(f"{loc.replace('.[', '[')}: {err['msg']}")
    return "\n  ".join(lines)

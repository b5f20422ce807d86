"""The fleet config: LiteLLM's proxy config file (`model_list`, `router_settings`,
`litellm_settings`, `general_settings`), loaded unchanged.

A LiteLLM user brings their config as it is. Keys are sorted three ways:
- ours: modelled and honoured (models.config_schema), including LiteLLM's call
  defaults in `litellm_params`, prices in `model_info`, `litellm_settings`' retries,
  timeout and fallbacks (`router_settings` wins where both set one), and
  `general_settings.master_key`;
- LiteLLM-only: known to LiteLLM but not honoured here, listed as warnings
  (`FleetConfig.warnings`: printed at start, served on `GET /v1/admin/config/warnings`);
- unknown: a typo or a foreign key, reported by its path as an error.
Every error of a file is reported at once: unknown keys, bad values, unknown providers.
Secret references (`os.environ/NAME`) are resolved when the config is loaded, so an
unset variable stops the process at start, not at the first call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from models.config_schema import Deployment, FleetConfig, LiteLLMParams, RouterSettings, Strategy
from models.litellm_keys import LITELLM_ONLY_PARAMS, LITELLM_ONLY_ROUTER, LITELLM_ONLY_TOP
from models.llmfleet_settings import LlmfleetSettings
from models.provider_names import NEEDS_API_BASE, PROVIDERS

__all__ = [
    "NOT_HONOURED",
    "ConfigError",
    "Deployment",
    "FleetConfig",
    "LiteLLMParams",
    "RouterSettings",
    "Strategy",
    "load_fleet_config",
    "parse_fleet_config",
    "warnings_text",
]

ENV_REF = "os.environ/"
#: `litellm_settings` keys honoured, as the `router_settings` key each sets.
LITELLM_SETTINGS_ROUTER = {
    "num_retries": "num_retries",
    "request_timeout": "timeout",
    "fallbacks": "fallbacks",
    "context_window_fallbacks": "context_window_fallbacks",
    "content_policy_fallbacks": "content_policy_fallbacks",
    "default_fallbacks": "default_fallbacks",
}


#: What a warning says of its key.
NOT_HONOURED = "known to LiteLLM, not honoured by llmfleet: ignored"


def warnings_text(config: FleetConfig) -> str | None:
    """The config's warnings as one message (printed at start), or None."""
    if not config.warnings:
        return None
    return f"fleet config: {len(config.warnings)} key(s) {NOT_HONOURED}: " + ", ".join(
        config.warnings
    )


class ConfigError(ValueError):
    """The fleet config cannot be used; the message names every offending path."""


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
    router: dict[str, Any] = {}
    from_litellm: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "model_list":
            data[key] = value
        elif key == "router_settings":
            router = _sort_keys(value, RouterSettings, LITELLM_ONLY_ROUTER, key, errors, warnings)
        elif key == "litellm_settings":
            data.update(_litellm_settings(value, from_litellm, errors, warnings))
        elif key == "general_settings":
            data.update(_general_settings(value, environ, errors, warnings))
        elif key == "llmfleet_settings":
            kept = _sort_keys(value, LlmfleetSettings, frozenset(), key, errors, warnings)
            data[key] = _validated(kept, LlmfleetSettings, key, errors)
        elif key in LITELLM_ONLY_TOP:
            warnings.append(key)
        else:
            errors.append(f"{key}: unknown top-level key")
    data["model_list"] = _deployments(data.get("model_list"), environ, errors, warnings)
    # LiteLLM's precedence: what `router_settings` sets wins over `litellm_settings`.
    data["router_settings"] = _validated(
        {**from_litellm, **router}, RouterSettings, "router_settings", errors
    )
    if errors:
        raise ConfigError("invalid fleet config:\n  " + "\n  ".join(errors))
    try:
        return FleetConfig(**data, warnings=tuple(warnings))
    except ValidationError as exc:
        raise ConfigError("invalid fleet config:\n  " + "\n  ".join(_messages(exc, ""))) from None


def _litellm_settings(
    section: Any, router: dict[str, Any], errors: list[str], warnings: list[str]
) -> dict[str, Any]:
    """`drop_params` for the fleet; retries, timeout and fallbacks into `router`; the
    rest listed as warnings."""
    if not isinstance(section, dict):
        errors.append("litellm_settings: must be a mapping")
        return {}
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key == "drop_params":
            out["drop_params"] = value
        elif key in LITELLM_SETTINGS_ROUTER:
            router[LITELLM_SETTINGS_ROUTER[key]] = value
        else:
            warnings.append(f"litellm_settings.{key}")
    return out


def _general_settings(
    section: Any, environ: Mapping[str, str], errors: list[str], warnings: list[str]
) -> dict[str, Any]:
    """`master_key` (often `os.environ/LITELLM_MASTER_KEY`); the rest listed as warnings."""
    if not isinstance(section, dict):
        errors.append("general_settings: must be a mapping")
        return {}
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key != "master_key":
            warnings.append(f"general_settings.{key}")
        elif value is not None:
            resolved = _resolve_env({key: value}, environ, "general_settings", errors)
            if isinstance(resolved.get(key), str) and resolved[key]:
                out["master_key"] = SecretStr(resolved[key])
            elif key in resolved:
                errors.append("general_settings.master_key: must be a non-empty string")
    return out


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


def _validated(data: dict[str, Any], model: type[BaseModel], path: str, errors: list[str]) -> Any:
    """`data` as `model`, or None with its every problem added to `errors`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors.extend(_messages(exc, path))
        return None


def _deployments(
    model_list: Any, environ: Mapping[str, str], errors: list[str], warnings: list[str]
) -> list[Deployment]:
    """Every deployment checked on its own (keys, values, provider), so that one
    file's every mistake is reported together."""
    if not isinstance(model_list, list) or not model_list:
        errors.append("model_list: must be a non-empty list of deployments")
        return []
    out: list[Deployment] = []
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
        deployment = _validated(dep, Deployment, path, errors)
        if deployment is not None:
            errors.extend(_provider_problems(deployment.litellm_params, path))
            out.append(deployment)
    return out


def _provider_problems(params: LiteLLMParams, path: str) -> list[str]:
    """The deployment's provider must be known, and have a base URL if it needs one."""
    if params.provider not in PROVIDERS:
        return [
            f"{path}.litellm_params.model: unknown provider {params.provider!r} "
            f"(known: {', '.join(sorted(PROVIDERS))})"
        ]
    if params.provider in NEEDS_API_BASE and not params.api_base:
        return [f"{path}.litellm_params.api_base: required for {params.provider}"]
    return []


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


def _messages(exc: ValidationError, path: str) -> list[str]:
    """One line per problem, each naming its path from the file's top."""
    lines = []
    for err in exc.errors():
        parts = [path] if path else []
        parts += [f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"]]
        loc = ".".join(parts).replace(".[", "[")
        lines.append(f"{loc}: {err['msg']}")
    return lines

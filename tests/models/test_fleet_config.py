"""The fleet config reads LiteLLM's shape and says exactly what it will not use."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.fleet_config import ConfigError, load_fleet_config, parse_fleet_config

PROXY_CONFIG = Path(__file__).parents[1] / "fixtures" / "litellm" / "proxy_config.yaml"
PROXY_ENV = {
    "MOCK_BASE": "http://127.0.0.1:9/v1",
    "OPENAI_API_KEY": "sk-provider",
    "LITELLM_MASTER_KEY": "sk-litellm-master",
}

LITELLM_CONFIG = """
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: os.environ/OPENAI_API_KEY
      rpm: 100
      tpm: 50000
      weight: 2
      timeout: 30
      stream_timeout: 10
    model_info:
      id: oai-1
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai_compatible/gpt-4o-mini
      api_base: http://10.0.0.5:8000/v1
router_settings:
  num_retries: 3
  routing_strategy: usage-based-routing
  enable_pre_call_checks: true
litellm_settings:
  drop_params: true
  num_retries: 4
"""


def test_litellm_config_loads_with_secrets_resolved_and_litellm_only_keys_listed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(LITELLM_CONFIG)
    config = load_fleet_config(path, {"OPENAI_API_KEY": "sk-real"})

    first, second = config.model_list
    assert first.id == "oai-1" and second.id == "gpt-4o-mini-1"
    assert first.litellm_params.api_key is not None
    assert first.litellm_params.api_key.get_secret_value() == "sk-real"
    assert "sk-real" not in repr(config)
    assert first.litellm_params.provider == "openai"
    assert first.litellm_params.provider_model == "gpt-4o-mini"
    assert config.router_settings.num_retries == 3
    assert config.router_settings.routing_strategy == "usage-based-routing"
    assert config.drop_params is True
    assert set(config.warnings) == {
        "router_settings.enable_pre_call_checks",
        "model_list[0].litellm_params.stream_timeout",
    }
    assert [d.id for d in config.deployments_for("gpt-4o-mini")] == ["oai-1", "gpt-4o-mini-1"]


def test_unset_environment_variable_is_an_error_naming_it() -> None:
    raw = {
        "model_list": [
            {
                "model_name": "m",
                "litellm_params": {"model": "openai/x", "api_key": "os.environ/NOPE_KEY"},
            }
        ]
    }
    with pytest.raises(
        ConfigError,
        match=r"model_list\[0\]\.litellm_params\.api_key: environment variable NOPE_KEY is not set",
    ):
        parse_fleet_config(raw, {})


def test_unknown_keys_are_errors_naming_every_path() -> None:
    raw = {
        "model_list": [
            {
                "model_name": "m",
                "litellm_params": {"model": "openai/x", "api_bsae": "typo"},
                "extra": 1,
            }
        ],
        "router_settings": {"num_retires": 2},
        "modle_list": [],
    }
    with pytest.raises(ConfigError) as info:
        parse_fleet_config(raw, {})
    message = str(info.value)
    for path in (
        "modle_list: unknown top-level key",
        "model_list[0].extra: unknown key",
        "model_list[0].litellm_params.api_bsae: unknown key",
        "router_settings.num_retires: unknown key",
    ):
        assert path in message


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({}, "model_list: must be a non-empty list"),
        (
            {"model_list": [{"model_name": "m", "litellm_params": {"model": "no-provider"}}]},
            "model_list[0].litellm_params.model",
        ),
        (
            {
                "model_list": [
                    {"model_name": "m", "litellm_params": {"model": "openai/x", "rpm": 0}}
                ]
            },
            "rpm",
        ),
        (
            {
                "model_list": [
                    {
                        "model_name": "m",
                        "litellm_params": {"model": "openai/x"},
                        "model_info": {"id": "d"},
                    },
                    {
                        "model_name": "n",
                        "litellm_params": {"model": "openai/y"},
                        "model_info": {"id": "d"},
                    },
                ]
            },
            "duplicate deployment id 'd'",
        ),
    ],
)
def test_invalid_values_are_reported(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_fleet_config(raw, {})
    assert needle in str(info.value)


def test_missing_or_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read fleet config"):
        load_fleet_config(tmp_path / "missing.yaml", {})
    broken = tmp_path / "broken.yaml"
    broken.write_text("model_list: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_fleet_config(broken, {})


def test_aliases_wildcards_and_fallbacks_resolve() -> None:
    raw = {
        "model_list": [
            {"model_name": "openai/*", "litellm_params": {"model": "openai/*"}},
            {
                "model_name": "*",
                "litellm_params": {"model": "hosted_vllm/*", "api_base": "http://gpu/v1"},
            },
            {"model_name": "small", "litellm_params": {"model": "openai/gpt-4o-mini"}},
        ],
        "router_settings": {
            "model_group_alias": {"cheap": "small"},
            "fallbacks": [{"small": ["openai/gpt-4o"]}],
            "default_fallbacks": ["llama3"],
            "model_group_routing_strategy": {"small": "least-busy"},
        },
    }
    config = parse_fleet_config(raw, {})
    models = lambda name: [d.litellm_params.model for d in config.deployments_for(name)]  # noqa: E731
    assert models("openai/gpt-4.1") == ["openai/gpt-4.1"]
    assert models("llama3") == ["hosted_vllm/llama3"]
    assert models("cheap") == ["openai/gpt-4o-mini"]
    settings = config.router_settings
    assert settings.fallbacks_for("fallbacks", "small") == ["openai/gpt-4o", "llama3"]
    assert settings.strategy_for("small") == "least-busy"
    assert settings.strategy_for("other") == "simple-shuffle"


def test_unknown_policy_names_are_refused() -> None:
    raw = {
        "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x"}}],
        "router_settings": {"retry_policy": {"RateLimitErrorRetires": 3}},
    }
    with pytest.raises(ConfigError, match="RateLimitErrorRetires"):
        parse_fleet_config(raw, {})


def test_a_litellm_proxy_config_works_as_it_is() -> None:
    # Given a LiteLLM proxy config file, loaded unchanged
    config = load_fleet_config(PROXY_CONFIG, PROXY_ENV)
    primary, mini = config.model_list
    # Then its call defaults apply where a request sets none, and a request's own win
    params = primary.litellm_params
    assert params.with_defaults({"model": "gpt-4o", "temperature": 1.0, "max_tokens": None}) == {
        "model": "gpt-4o",
        "temperature": 1.0,
        "max_tokens": 256,
        "stop": ["\n\n"],
        "seed": 7,
    }
    # (a request's token limit of either name replaces the default)
    assert "max_tokens" not in params.with_defaults({"max_completion_tokens": 9})
    assert mini.litellm_params.with_defaults({"model": "m"}) == {"model": "m"}
    # its model_info prices count, litellm_params' winning where both set one
    assert str(params.input_cost_per_token) == "0.0000025"
    assert str(params.output_cost_per_token) == "0.00001"
    assert str(mini.litellm_params.output_cost_per_token) == "6E-7"
    assert str(mini.litellm_params.cache_read_input_token_cost) == "7.5E-8"
    # litellm_settings' retries, timeout and fallbacks are honoured; router_settings wins
    router = config.router_settings
    assert router.num_retries == 2
    assert router.timeout == 45
    assert router.fallbacks_for("fallbacks", "gpt-4o") == ["gpt-4o-mini"]
    assert router.fallbacks_for("context_window_fallbacks", "gpt-4o-mini") == ["gpt-4o"]
    # general_settings.master_key is the master key
    assert config.master_key is not None
    assert config.master_key.get_secret_value() == "sk-litellm-master"
    assert "sk-litellm-master" not in repr(config)
    # and what llmfleet does not honour is listed, by path
    assert set(config.warnings) == {
        "router_settings.redis_host",
        "litellm_settings.set_verbose",
        "litellm_settings.success_callback",
        "litellm_settings.cache",
        "general_settings.database_url",
        "general_settings.alerting",
    }


def test_every_mistake_of_a_file_is_reported_at_once() -> None:
    # Given a config with an unknown key, a bad value, an unknown provider, a provider
    # without its api_base, an unset variable and a bad router setting
    raw = {
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/x", "temprature": 1}},
            {"model_name": "b", "litellm_params": {"model": "openai/x", "temperature": 9}},
            {"model_name": "c", "litellm_params": {"model": "vertexx/gemini"}},
            {"model_name": "d", "litellm_params": {"model": "hosted_vllm/llama"}},
            {
                "model_name": "e",
                "litellm_params": {"model": "openai/x", "api_key": "os.environ/NOPE"},
            },
        ],
        "router_settings": {"num_retries": -1},
        "general_settings": {"master_key": "os.environ/NO_MASTER"},
    }
    # When it is loaded
    with pytest.raises(ConfigError) as info:
        parse_fleet_config(raw, {})
    # Then one error names them all
    message = str(info.value)
    for needle in (
        "model_list[0].litellm_params.temprature: unknown key",
        "model_list[1].litellm_params.temperature: Input should be less than or equal to 2",
        "model_list[2].litellm_params.model: unknown provider 'vertexx'",
        "model_list[3].litellm_params.api_base: required for hosted_vllm",
        "model_list[4].litellm_params.api_key: environment variable NOPE is not set",
        "router_settings.num_retries: Input should be greater than or equal to 0",
        "general_settings.master_key: environment variable NO_MASTER is not set",
    ):
        assert needle in message, (needle, message)

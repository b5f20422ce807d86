"""Keys that LiteLLM's config knows and llmfleet does not honour: reported by the fleet
config loader as a listed warning rather than an error, so a LiteLLM config loads."""

from __future__ import annotations

__all__ = ["LITELLM_ONLY_PARAMS", "LITELLM_ONLY_ROUTER", "LITELLM_ONLY_TOP"]

LITELLM_ONLY_TOP = frozenset(
    {
        "litellm_settings",
        "general_settings",
        "environment_variables",
        "guardrails",
        "callback_settings",
        "credential_list",
        "files_settings",
        "include",
        "finetune_settings",
        "assistant_settings",
        "mcp_servers",
    }
)
LITELLM_ONLY_PARAMS = frozenset(
    {
        "stream_timeout",
        "max_retries",
        "custom_llm_provider",
        "litellm_credential_name",
        "mock_response",
        "use_in_pass_through",
        "merge_reasoning_content_in_choices",
        "vertex_project",
        "vertex_location",
        "vertex_credentials",
        "region_name",
        "extra_headers",
    }
)
LITELLM_ONLY_ROUTER = frozenset(
    {
        "retry_after",
        "enable_pre_call_checks",
        "redis_host",
        "redis_port",
        "redis_password",
        "redis_url",
        "cache_responses",
        "cache_kwargs",
        "set_verbose",
        "debug_level",
        "provider_budget_config",
        "enable_tag_filtering",
        "disable_cooldowns",
        "max_fallbacks",
        "optional_pre_call_checks",
        "model_group_retry_policy",
        "stream_timeout",
        "default_max_parallel_requests",
        "default_litellm_params",
        "polling_interval",
    }
)

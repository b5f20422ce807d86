"""The project's mock OpenAI-compatible provider, for tests, demos and benchmarks."""

from workers.mock_provider.server import CONFIG_ENV, create_app, create_app_from_env, serve

__all__ = ["CONFIG_ENV", "create_app", "create_app_from_env", "serve"]

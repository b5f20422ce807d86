"""Azure OpenAI: the OpenAI JSON protocol at a per-deployment URL, with `api-version`
in the query and the key in an `api-key` header. Bodies, replies and errors are
OpenAI's, so the OpenAI module's converters and error boundary serve unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.fleet_config import Deployment
from workers.providers import errors
from workers.providers.base import CallOptions
from workers.providers.exchange import Exchange, ExchangeProtocol, StreamCall, json_call
from workers.providers.openai import (
    ChatChunks,
    error_from_response,
    parse_chat_response,
    parse_embeddings_response,
    post_json,
    stream_payload,
)

__all__ = ["AzureProtocol", "build_azure_request"]

DEFAULT_API_VERSION = "2024-10-21"


def build_azure_request(
    deployment: Deployment, body: dict[str, Any], operation: str
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """`azure/<deployment name>` with `api_base` = https://<resource>.openai.azure.com."""
    params = deployment.litellm_params
    if not params.api_base:
        raise errors.BadRequestError(
            "azure deployments need `api_base` (https://<resource>.openai.azure.com)",
            provider="azure",
            param="api_base",
        )
    version = params.api_version or DEFAULT_API_VERSION
    base = params.api_base.rstrip("/")
    url = f"{base}/openai/deployments/{params.provider_model}/{operation}?api-version={version}"
    headers = {"Content-Type": "application/json"}
    if params.api_key is not None:
        headers["api-key"] = params.api_key.get_secret_value()
    payload = {k: v for k, v in body.items() if k != "model"}
    return url, headers, payload


@dataclass(frozen=True)
class AzureProtocol(ExchangeProtocol):
    name: str = "azure"

    def chat_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange:
        url, headers, payload = build_azure_request(deployment, body, "chat/completions")
        data = yield from post_json(self.name, url, headers, payload, options.timeout)
        return parse_chat_response(self.name, data)

    def chat_stream(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> StreamCall:
        url, headers, payload = build_azure_request(deployment, body, "chat/completions")
        call = json_call(url, headers, stream_payload(payload), options.timeout)
        return StreamCall(call, ChatChunks(self.name), error_from_response)

    def embed_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange:
        url, headers, payload = build_azure_request(deployment, body, "embeddings")
        data = yield from post_json(self.name, url, headers, payload, options.timeout)
        return parse_embeddings_response(self.name, data)

"""The Amazon Bedrock protocol: chat through the Converse API, embeddings through
InvokeModel (Titan and Cohere bodies), every request signed with SigV4 by botocore's
own signer. The Converse converters live in bedrock_convert.py, the stream's in bedrock_stream.py,
the embeddings bodies in bedrock_embed.py; here are the region and credentials, the
signing, the error boundary, then the I/O.

Bedrock names its errors in the `x-amzn-ErrorType` header (`ValidationException:http://...`)
with a JSON `{"message": ...}` body. The name wins over the status (ModelNotReadyException
comes as a 429 but is the model warming up, not our rate):

    ValidationException             400  BadRequestError
        "too long" / "too many input tokens" / "context window|length|limit"
                                         -> ContextWindowExceededError
    UnrecognizedClientException,
    InvalidSignatureException, ...  403  AuthenticationError
    AccessDeniedException           403  PermissionDeniedError
    ResourceNotFoundException       404  NotFoundError
    ModelTimeoutException           408  ProviderTimeoutError
    ThrottlingException             429  RateLimitedError (Retry-After when sent)
    ServiceQuotaExceededException   400  RateLimitedError
    ModelNotReadyException          429  UnavailableError
    ModelErrorException             424  UnavailableError
    InternalServerException         500  UnavailableError
    ServiceUnavailableException     503  UnavailableError
    anything else                        by status, as for OpenAI
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import botocore.session
import httpx2 as httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import BotoCoreError

from models.fleet_config import Deployment, LiteLLMParams
from workers.providers import bedrock_convert as convert
from workers.providers import errors
from workers.providers.base import CallOptions
from workers.providers.bedrock_embed import embed_family, embed_payloads, parse_embeddings
from workers.providers.bedrock_stream import ConverseEvents, aws_events
from workers.providers.exchange import Exchange, ExchangeProtocol, HttpCall, StreamCall
from workers.providers.openai import error_class_for_status, read_json, retry_after

__all__ = [
    "BedrockProtocol",
    "EnvironmentCredentials",
    "error_from_response",
    "model_url",
    "resolve_region",
    "sign",
]

SIGNING_NAME = "bedrock"
#: What ConverseStream answers in.
EVENTS = "application/vnd.amazon.eventstream"
_REGION = re.compile(r"[a-z0-9-]+")
_CONTEXT = re.compile(r"too long|too many input tokens|context (window|length|limit)", re.I)

_TYPE_ERRORS: dict[str, type[errors.ProviderError]] = {
    "ValidationException": errors.BadRequestError,
    "UnrecognizedClientException": errors.AuthenticationError,
    "InvalidSignatureException": errors.AuthenticationError,
    "IncompleteSignatureException": errors.AuthenticationError,
    "MissingAuthenticationTokenException": errors.AuthenticationError,
    "ExpiredTokenException": errors.AuthenticationError,
    "AccessDeniedException": errors.PermissionDeniedError,
    "ResourceNotFoundException": errors.NotFoundError,
    "ModelTimeoutException": errors.ProviderTimeoutError,
    "ThrottlingException": errors.RateLimitedError,
    "ServiceQuotaExceededException": errors.RateLimitedError,
    "ModelNotReadyException": errors.UnavailableError,
    "ModelErrorException": errors.UnavailableError,
    "InternalServerException": errors.UnavailableError,
    "ServiceUnavailableException": errors.UnavailableError,
}


# -- region, credentials, signing -----------------------------------------------------


def resolve_region(params: LiteLLMParams, environ: Mapping[str, str], provider: str) -> str:
    region = (
        params.aws_region_name or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    )
    if not region or not _REGION.fullmatch(region):
        raise errors.AuthenticationError(
            f"{provider}: no valid AWS region: set `aws_region_name` on the deployment, "
            "or AWS_REGION / AWS_DEFAULT_REGION",
            provider=provider,
        )
    return region


def deployment_credentials(params: LiteLLMParams, provider: str) -> ReadOnlyCredentials | None:
    """The deployment's own keys, or None when it names none."""
    key, secret = params.aws_access_key_id, params.aws_secret_access_key
    if key is None and secret is None:
        return None
    if key is None or secret is None:
        raise errors.AuthenticationError(
            f"{provider}: set both `aws_access_key_id` and `aws_secret_access_key`",
            provider=provider,
        )
    token = params.aws_session_token
    return Credentials(
        key.get_secret_value(),
        secret.get_secret_value(),
        token.get_secret_value() if token is not None else None,
    ).get_frozen_credentials()


class EnvironmentCredentials:
    """The standard AWS credential chain (environment, profile, SSO, container or
    instance role), resolved once per process and kept: a refreshable source renews
    itself, and an instance role is not asked again on every call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: Any = None

    def get(self, provider: str) -> ReadOnlyCredentials | None:
        with self._lock:
            if self._found is None:
                try:
                    self._found = botocore.session.get_session().get_credentials()
                except BotoCoreError as exc:
                    raise errors.AuthenticationError(
                        f"{provider}: cannot load AWS credentials: {exc}", provider=provider
                    ) from exc
            found = self._found
        return None if found is None else found.get_frozen_credentials()


def model_url(api_base: str | None, region: str, model_id: str, action: str) -> str:
    """`.../model/{modelId}/{action}`, the id quoted whole (ARNs hold `/` and `:`)."""
    base = (api_base or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")
    return f"{base}/model/{quote(model_id, safe='')}/{action}"


def sign(
    url: str,
    content: bytes,
    credentials: ReadOnlyCredentials,
    region: str,
    accept: str = "application/json",
) -> dict[str, str]:
    """Headers that sign exactly `content` POSTed to `url` (SigV4, service `bedrock`)."""
    headers = {"Content-Type": "application/json", "Accept": accept}
    request = AWSRequest(method="POST", url=url, data=content, headers=headers)
    SigV4Auth(credentials, SIGNING_NAME, region).add_auth(request)
    return dict(request.headers.items())


# -- the error boundary ---------------------------------------------------------------


def error_from_response(provider: str, response: httpx.Response) -> errors.ProviderError:
    """Map a non-2xx Bedrock reply to the error tree; the most specific class wins."""
    kind, message = _error_fields(response)
    return error_for_name(provider, kind, message, response.status_code, retry_after(response))


def error_for_name(
    provider: str,
    kind: str | None,
    message: str,
    status: int | None = None,
    wait: float | None = None,
) -> errors.ProviderError:
    """A Bedrock error name (a reply's, or a stream's exception event) as the tree."""
    cls = _TYPE_ERRORS.get(kind or "") or (
        error_class_for_status(status) if status else errors.UnavailableError
    )
    if cls is errors.BadRequestError and _CONTEXT.search(message):
        cls = errors.ContextWindowExceededError
    return cls(message, provider=provider, code=kind, retry_after=wait, status=status)


def _error_fields(response: httpx.Response) -> tuple[str | None, str]:
    """The error name (from the header, else the body, as botocore reads it) and message."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    raw = response.headers.get("x-amzn-errortype") or body.get("__type") or body.get("code")
    kind = raw.split(":", 1)[0].rsplit("#", 1)[-1] if isinstance(raw, str) and raw else None
    message = body.get("message") or body.get("Message")
    if not isinstance(message, str) or not message:
        message = f"bedrock answered HTTP {response.status_code}"
    return kind, message


def _header_tokens(response: httpx.Response) -> int | None:
    """InvokeModel reports the input token count in a header, whatever the body holds."""
    value = response.headers.get("x-amzn-bedrock-input-token-count", "")
    return int(value) if value.isdigit() else None


# -- the protocol ---------------------------------------------------------------------


@dataclass(frozen=True)
class BedrockProtocol(ExchangeProtocol):
    """`name` is the provider prefix (`bedrock/<modelId>`)."""

    name: str = "bedrock"
    _environment: EnvironmentCredentials = field(
        default_factory=EnvironmentCredentials, init=False, repr=False, compare=False
    )

    def chat_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange:
        payload = convert.build_converse_body(body, self.name, options.drop_params)
        model_id = deployment.litellm_params.provider_model
        response = yield from self._post(deployment, model_id, "converse", payload, options)
        request_id = response.headers.get("x-amzn-requestid") or uuid.uuid4().hex
        return convert.parse_converse_response(
            self.name,
            read_json(self.name, response),
            model=model_id,
            response_id=f"chatcmpl-{request_id}",
            created=int(time.time()),
        )

    def chat_stream(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> StreamCall:
        payload = convert.build_converse_body(body, self.name, options.drop_params)
        model_id = deployment.litellm_params.provider_model
        call = self._signed(deployment, model_id, "converse-stream", payload, options, EVENTS)
        error_for = functools.partial(error_for_name, self.name)
        events = ConverseEvents(
            self.name, convert.FINISH_REASONS, error_for, convert.usage_from_converse
        )
        return StreamCall(call, events, error_from_response, aws_events)

    def embed_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange:
        model_id = deployment.litellm_params.provider_model
        family = embed_family(model_id, self.name)
        payloads, count = embed_payloads(family, body, self.name, options.drop_params)
        replies = []
        for payload in payloads:
            response = yield from self._post(deployment, model_id, "invoke", payload, options)
            replies.append((read_json(self.name, response), _header_tokens(response)))
        return parse_embeddings(self.name, family, replies, model=model_id, expected=count)

    def _credentials(self, params: LiteLLMParams) -> ReadOnlyCredentials:
        credentials = deployment_credentials(params, self.name) or self._environment.get(self.name)
        if credentials is None:
            raise errors.AuthenticationError(
                f"{self.name}: no AWS credentials: set `aws_access_key_id` and "
                "`aws_secret_access_key` on the deployment, or provide them the standard "
                "AWS way (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, a role)",
                provider=self.name,
            )
        return credentials

    def _signed(
        self,
        deployment: Deployment,
        model_id: str,
        action: str,
        payload: dict[str, Any],
        options: CallOptions,
        accept: str = "application/json",
    ) -> HttpCall:
        params = deployment.litellm_params
        region = resolve_region(params, os.environ, self.name)
        url = model_url(params.api_base, region, model_id, action)
        content = json.dumps(payload, separators=(",", ":")).encode()
        headers = sign(url, content, self._credentials(params), region, accept)
        return HttpCall(url, headers, content, options.timeout)

    def _post(
        self,
        deployment: Deployment,
        model_id: str,
        action: str,
        payload: dict[str, Any],
        options: CallOptions,
    ) -> Generator[HttpCall, httpx.Response, httpx.Response]:
        """Sign and send one call; returns the 2xx response."""
        response = yield self._signed(deployment, model_id, action, payload, options)
        if response.status_code >= 400:
            raise error_from_response(self.name, response)
        return response

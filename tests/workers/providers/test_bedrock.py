"""The Bedrock protocol against recorded replies, through httpx.MockTransport.

Every Converse body we send is validated against botocore's own service model, every
recorded reply is read by botocore's rest-json parser and validated against the
Converse output shape, and every request's SigV4 signature is recomputed by botocore
from the bytes that went over the wire.
"""

from __future__ import annotations

import base64
import calendar
import copy
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import botocore.session
import httpx2 as httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HeadersDict
from botocore.credentials import Credentials
from botocore.parsers import create_parser
from botocore.validate import validate_parameters
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from models.fleet_config import parse_fleet_config
from workers.providers import errors
from workers.providers.base import CallOptions, ProviderResult, Usage, openai_usage
from workers.providers.bedrock import BedrockProtocol
from workers.providers.params import UnsupportedParamError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "bedrock"
MODEL = "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0"
KEY, SECRET, REGION = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1"
ENDPOINT = "https://bedrock-runtime.us-east-1.amazonaws.com"
RUNTIME = botocore.session.get_session().get_service_model("bedrock-runtime")
CONVERSE = RUNTIME.operation_model("Converse")
REQUEST: dict[str, Any] = {
    "model": "br",
    "messages": [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0.2,
    "max_tokens": 256,
    "stop": "END",
}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake pixels").decode()


def recorded(name: str, **headers: str) -> httpx.Response:
    rec = json.loads((FIXTURES / name).read_text())
    return httpx.Response(
        rec["status"], headers={**rec["headers"], **headers}, content=json.dumps(rec["body"])
    )


def deployment(model: str = MODEL, **params: Any) -> Any:
    creds = {"aws_region_name": REGION, "aws_access_key_id": KEY, "aws_secret_access_key": SECRET}
    litellm_params = {"model": model, **creds, **params}
    raw = {"model_list": [{"model_name": "br", "litellm_params": litellm_params}]}
    return parse_fleet_config(raw, {}).model_list[0]


class Recorder:
    """A MockTransport handler: keeps the requests, answers with `reply(request)`."""

    def __init__(self, reply: str | Callable[[httpx.Request], httpx.Response]) -> None:
        self.reply = reply
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return recorded(self.reply) if isinstance(self.reply, str) else self.reply(request)

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].content)


def call(
    handler: Recorder | Callable[[httpx.Request], httpx.Response],
    body: dict[str, Any] = REQUEST,
    *,
    drop: bool = False,
    embed: bool = False,
    dep: Any = None,
) -> ProviderResult:
    options = CallOptions(timeout=5, drop_params=drop)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        method = BedrockProtocol().embed if embed else BedrockProtocol().chat
        return method(client, dep or deployment(), body, options)


def model_id_of(request: httpx.Request) -> str:
    return unquote(request.url.raw_path.decode().split("/")[2])


def assert_valid_converse(request: httpx.Request) -> dict[str, Any]:
    """The body plus modelId validates against botocore's Converse input shape (image
    bytes are blobs there, so they are decoded for validation only)."""
    body = json.loads(request.content)
    params = copy.deepcopy(body)
    for message in params["messages"]:
        for block in message["content"]:
            if "image" in block:
                source = block["image"]["source"]
                source["bytes"] = base64.b64decode(source["bytes"])
    validate_parameters({**params, "modelId": model_id_of(request)}, CONVERSE.input_shape)
    return body


def assert_signed(
    request: httpx.Request,
    key: str = KEY,
    secret: str = SECRET,
    token: str | None = None,
    region: str = REGION,
) -> None:
    """A SigV4 Authorization header whose signature botocore, signing the request as
    received (URL, signed headers, body bytes) at its x-amz-date, computes again."""
    date = request.headers["x-amz-date"]
    assert abs(calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ")) - time.time()) < 300
    auth = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=(\S+), SignedHeaders=(\S+), Signature=([0-9a-f]{64})",
        request.headers["authorization"],
    )
    assert auth is not None
    assert auth[1] == f"{key}/{date[:8]}/{region}/bedrock/aws4_request"
    signed = auth[2].split(";")
    assert {"host", "x-amz-date", "content-type"} <= set(signed)
    if token:
        assert "x-amz-security-token" in signed
        assert request.headers["x-amz-security-token"] == token
    again = AWSRequest(
        method=request.method,
        url=str(request.url),
        data=request.content,
        headers={name: request.headers[name] for name in signed},
    )
    again.context["timestamp"] = date
    signer = SigV4Auth(Credentials(key, secret, token), "bedrock", region)
    assert auth[3] == signer.signature(
        signer.string_to_sign(again, signer.canonical_request(again)), again
    )


def botocore_parse(name: str) -> dict[str, Any]:
    rec = json.loads((FIXTURES / name).read_text())
    raw = {
        "status_code": rec["status"],
        "headers": HeadersDict(rec["headers"]),
        "body": json.dumps(rec["body"]).encode(),
    }
    return create_parser("rest-json").parse(raw, CONVERSE.output_shape)


# -- chat -----------------------------------------------------------------------------


def test_text_request_is_valid_converse_and_reply_is_a_chat_completion() -> None:
    recorder = Recorder("converse_text.json")
    before = copy.deepcopy(REQUEST)

    result = call(recorder)

    request = recorder.requests[0]
    assert (
        str(request.url) == f"{ENDPOINT}/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    )
    assert assert_valid_converse(request) == {
        "messages": [{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
        "system": [{"text": "Answer in one sentence."}],
        "inferenceConfig": {"maxTokens": 256, "temperature": 0.2, "stopSequences": ["END"]},
    }
    assert before == REQUEST  # the caller's body is not mutated
    ChatCompletion.model_validate(result.response)
    assert result.response["id"] == "chatcmpl-5b3d6f0a-3c1e-4b6e-9a43-2f1d0c8e7a11"
    assert result.response["model"] == "anthropic.claude-3-5-sonnet-20240620-v1:0"
    choice = result.response["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "The capital of France is Paris."}
    assert choice["finish_reason"] == "stop"
    assert result.usage == Usage(21, 10, 31)


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"])
def test_request_carries_a_valid_sigv4_signature(token: str | None) -> None:
    recorder = Recorder("converse_text.json")
    call(recorder, dep=deployment(aws_session_token=token))
    assert_signed(recorder.requests[0], token=token)


def test_tools_conversation_round_trips_through_converse() -> None:
    # Given a user question and a tool, the model answers with a toolUse block
    first = Recorder("converse_tool_use.json")
    question = {"role": "user", "content": "What's the weather in Paris?"}
    asked = call(first, {"model": "br", "messages": [question], "tools": [WEATHER_TOOL]})
    (tool,) = assert_valid_converse(first.requests[0])["toolConfig"]["tools"]
    function = WEATHER_TOOL["function"]
    assert tool["toolSpec"] == {
        "name": "get_weather",
        "description": function["description"],
        "inputSchema": {"json": function["parameters"]},
    }
    # ... which comes back as an OpenAI tool call
    ChatCompletion.model_validate(asked.response)
    choice = asked.response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call_ = choice["message"]["tool_calls"][0]
    assert call_["id"] == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"
    assert call_["function"]["name"] == "get_weather"
    assert json.loads(call_["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    # When the tool's result is sent back with the assistant turn as we returned it
    second = Recorder("converse_text.json")
    result = {"role": "tool", "tool_call_id": call_["id"], "content": '{"temp_c": 18}'}
    conversation = [question, choice["message"], result]
    final = call(second, {"model": "br", "messages": conversation, "tools": [WEATHER_TOOL]})
    # Then the turns are Bedrock's own toolUse block and a toolResult in a user turn
    recorded_tool_use = botocore_parse("converse_tool_use.json")["output"]["message"]["content"]
    messages = assert_valid_converse(second.requests[0])["messages"]
    assert messages[1] == {"role": "assistant", "content": recorded_tool_use}
    assert messages[2] == {
        "role": "user",
        "content": [
            {"toolResult": {"toolUseId": call_["id"], "content": [{"json": {"temp_c": 18}}]}}
        ],
    }
    assert final.response["choices"][0]["finish_reason"] == "stop"


def test_consecutive_same_role_messages_merge_into_alternating_turns() -> None:
    recorder = Recorder("converse_text.json")
    tool_calls = [
        {"id": f"call_{c}", "type": "function", "function": {"name": "get_weather", "arguments": a}}
        for c, a in (("1", '{"city": "Paris"}'), ("2", '{"city": "Lyon"}'))
    ]
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "Weather in Paris"},
        {"role": "user", "content": [{"type": "text", "text": "and Lyon?"}]},
        {"role": "assistant", "content": "", "tool_calls": tool_calls},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "sunny"}]},
        {"role": "user", "content": "Thanks. Summarise."},
    ]
    call(recorder, {"model": "br", "messages": messages, "tools": [WEATHER_TOOL]})
    body = assert_valid_converse(recorder.requests[0])
    assert body["system"] == [{"text": "Be brief."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [{"text": "Weather in Paris"}, {"text": "and Lyon?"}]
    assert [b["toolUse"]["input"] for b in body["messages"][1]["content"]] == [
        {"city": "Paris"},
        {"city": "Lyon"},
    ]
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "call_1", "content": [{"json": {"temp_c": 18}}]}},
        {"toolResult": {"toolUseId": "call_2", "content": [{"text": "sunny"}]}},
        {"text": "Thanks. Summarise."},
    ]


NAMED = {"type": "function", "function": {"name": "get_weather"}}
CHOICES: list[tuple[Any, dict[str, Any] | None]] = [
    (None, {}),
    ("auto", {"auto": {}}),
    ("required", {"any": {}}),
]
CHOICES += [(NAMED, {"tool": {"name": "get_weather"}}), ("none", None)]


@pytest.mark.parametrize(("choice", "expected"), CHOICES)
def test_tool_choice(choice: Any, expected: dict[str, Any] | None) -> None:
    """Converse has no "none": then no tools are sent at all."""
    recorder = Recorder("converse_tool_use.json")
    call(recorder, {**REQUEST, "tools": [WEATHER_TOOL], "tool_choice": choice})
    config = assert_valid_converse(recorder.requests[0]).get("toolConfig")
    assert (config and config.get("toolChoice", {})) == expected


def test_images_inline_as_bytes_and_urls_fail_or_drop() -> None:
    def ask(url: str) -> dict[str, Any]:
        content = [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return {"model": "br", "messages": [{"role": "user", "content": content}]}

    recorder = Recorder("converse_text.json")
    call(recorder, ask(f"data:image/jpg;base64,{PNG}"))
    image = assert_valid_converse(recorder.requests[0])["messages"][0]["content"][1]
    assert image == {"image": {"format": "jpeg", "source": {"bytes": PNG}}}

    with pytest.raises(UnsupportedParamError) as info:
        call(recorder, ask("https://example.com/cat.png"))
    assert info.value.param == "messages[0].content"
    assert len(recorder.requests) == 1  # nothing was sent

    call(recorder, ask("https://example.com/cat.png"), drop=True)
    assert assert_valid_converse(recorder.requests[1])["messages"][0]["content"] == [
        {"text": "What is this?"}
    ]


UNSUPPORTED: dict[str, Any] = {"n": 2, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.5}
UNSUPPORTED |= {"logit_bias": {"50256": -100}, "logprobs": True, "response_format": {}}


@pytest.mark.parametrize(("name", "value"), UNSUPPORTED.items())
def test_unsupported_params_fail_by_name_or_drop(name: str, value: Any) -> None:
    recorder = Recorder("converse_text.json")
    with pytest.raises(UnsupportedParamError) as info:
        call(recorder, {**REQUEST, name: value})
    assert info.value.param == name and f"`{name}`" in info.value.message
    assert info.value.to_error()["code"] == "unsupported_parameter"
    assert not recorder.requests

    call(recorder, {**REQUEST, name: value, "n": 1, "stream": False}, drop=True)
    sent = assert_valid_converse(recorder.requests[0])
    assert set(sent) == {"messages", "system", "inferenceConfig"}


def test_cache_tokens_land_in_the_normalized_usage() -> None:
    result = call(Recorder("converse_cache_usage.json"))
    # inputTokens 12 + cache read 2048 + cache write 310
    assert result.usage == Usage(2370, 40, 2410, cached_tokens=2048, cache_creation_tokens=310)
    assert result.response["usage"] == openai_usage(result.usage)
    assert result.response["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "name", ["converse_text.json", "converse_tool_use.json", "converse_cache_usage.json"]
)
def test_recorded_replies_are_valid_converse_output(name: str) -> None:
    """Read by botocore's rest-json parser, then validated against the output shape."""
    parsed = botocore_parse(name)
    parsed.pop("ResponseMetadata")
    validate_parameters(parsed, CONVERSE.output_shape)


# -- the error boundary ---------------------------------------------------------------

ERRORS = [
    ("error_400_validation.json", errors.BadRequestError, False, False),
    ("error_400_too_long.json", errors.ContextWindowExceededError, False, False),
    ("error_403_access_denied.json", errors.PermissionDeniedError, False, True),
    ("error_403_unrecognized_client.json", errors.AuthenticationError, False, True),
    ("error_404.json", errors.NotFoundError, False, True),
    ("error_408.json", errors.ProviderTimeoutError, True, True),
    ("error_429.json", errors.RateLimitedError, True, True),
    ("error_429_model_not_ready.json", errors.UnavailableError, True, True),
    ("error_500.json", errors.UnavailableError, True, True),
    ("error_503.json", errors.UnavailableError, True, True),
]


@pytest.mark.parametrize(("name", "cls", "retryable", "cools"), ERRORS)
def test_error_replies_map_to_the_error_tree(
    name: str, cls: type[errors.ProviderError], retryable: bool, cools: bool
) -> None:
    with pytest.raises(errors.ProviderError) as info:
        call(lambda _: recorded(name, **({"Retry-After": "3"} if "429" in name else {})))
    exc = info.value
    assert type(exc) is cls
    assert (exc.retryable, exc.cools_down) == (retryable, cools)
    # botocore reads the same error name and message from the recording
    error = botocore_parse(name)["Error"]
    assert (exc.code, exc.message) == (error["Code"], error["Message"])
    modelled = {e.name: e.metadata["error"]["httpStatusCode"] for e in CONVERSE.error_shapes}
    status = json.loads((FIXTURES / name).read_text())["status"]
    assert modelled.get(exc.code or "", status) == status  # the recording matches the model
    assert exc.retry_after == (3 if "429" in name else None)


def test_timeout_connection_and_garbage() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(errors.ProviderTimeoutError) as info:
        call(timeout)
    assert info.value.retryable and isinstance(info.value.__cause__, httpx.ReadTimeout)
    with pytest.raises(errors.ProviderConnectionError):
        call(refused)
    with pytest.raises(errors.MalformedResponseError):
        call(lambda _: httpx.Response(200, content=b"{not json"))
    with pytest.raises(errors.MalformedResponseError):
        call(lambda _: httpx.Response(200, json={"stopReason": "end_turn", "usage": {}}))
    with pytest.raises(errors.UnavailableError) as bad_gateway:
        call(lambda _: httpx.Response(502, content=b"<html>bad gateway</html>"))
    assert bad_gateway.value.message == "bedrock answered HTTP 502"


# -- region, credentials, endpoint ----------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An empty standard AWS environment: no variables, no files, no instance role."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def test_region_and_credentials_come_from_the_standard_environment(
    aws_env: pytest.MonkeyPatch,
) -> None:
    bare = deployment(aws_region_name=None, aws_access_key_id=None, aws_secret_access_key=None)
    recorder = Recorder("converse_text.json")
    with pytest.raises(errors.AuthenticationError, match="aws_region_name"):
        call(recorder, dep=bare)
    aws_env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with pytest.raises(errors.AuthenticationError, match="no AWS credentials") as info:
        call(recorder, dep=bare)
    assert info.value.cools_down and not recorder.requests

    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDENVIRONMENT")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "envsecretEXAMPLEKEY")
    call(recorder, dep=bare)
    assert recorder.requests[0].url.host == "bedrock-runtime.eu-west-1.amazonaws.com"
    assert_signed(
        recorder.requests[0], "AKIDENVIRONMENT", "envsecretEXAMPLEKEY", region="eu-west-1"
    )
    with pytest.raises(errors.AuthenticationError, match="both"):
        call(recorder, dep=deployment(aws_secret_access_key=None))


def test_api_base_and_an_inference_profile_arn() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0"
    base = "https://vpce-0abc.bedrock-runtime.us-east-1.vpce.amazonaws.com/"
    recorder = Recorder("converse_text.json")
    call(recorder, dep=deployment(f"bedrock/{arn}", api_base=base))
    request = recorder.requests[0]
    assert request.url.host == "vpce-0abc.bedrock-runtime.us-east-1.vpce.amazonaws.com"
    assert model_id_of(request) == arn
    assert "%2F" in request.url.raw_path.decode()  # the id is one path segment
    assert_valid_converse(request)
    assert_signed(request)


# -- embeddings -----------------------------------------------------------------------


TITAN = "bedrock/amazon.titan-embed-text-v2:0"
COHERE = "bedrock/cohere.embed-english-v3"


def embed(handler: Any, model: str, **body: Any) -> ProviderResult:
    return call(handler, {"model": "br", **body}, embed=True, dep=deployment(model))


def test_titan_embeddings_one_call_per_input() -> None:
    recorder = Recorder("titan_embedding.json")

    result = embed(recorder, TITAN, input=["hello world", "paris is in france"], dimensions=256)

    assert [json.loads(r.content) for r in recorder.requests] == [
        {"inputText": "hello world", "dimensions": 256},
        {"inputText": "paris is in france", "dimensions": 256},
    ]
    assert (
        str(recorder.requests[0].url) == f"{ENDPOINT}/model/amazon.titan-embed-text-v2%3A0/invoke"
    )
    assert_signed(recorder.requests[1])
    CreateEmbeddingResponse.model_validate(result.response)
    assert [d["index"] for d in result.response["data"]] == [0, 1]
    assert result.response["data"][0]["embedding"][:2] == [0.0216, -0.0428]
    assert result.usage == Usage(14, 0, 14)


def test_cohere_embeddings_batch_the_inputs() -> None:
    recorder = Recorder("cohere_embedding.json")

    result = embed(recorder, COHERE, input=["hello world", "paris is in france"])

    assert json.loads(recorder.requests[0].content) == {
        "texts": ["hello world", "paris is in france"],
        "input_type": "search_document",
    }
    CreateEmbeddingResponse.model_validate(result.response)
    assert len(result.response["data"]) == 2
    assert result.usage == Usage(11, 0, 11)  # from X-Amzn-Bedrock-Input-Token-Count


def test_cohere_takes_96_texts_per_call() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        texts = json.loads(request.content)["texts"]
        return httpx.Response(200, json={"embeddings": [[0.1, 0.2]] * len(texts)})

    recorder = Recorder(reply)
    texts = [f"text {i}" for i in range(100)]
    result = embed(recorder, COHERE, input=texts, input_type="search_query")
    assert [len(json.loads(r.content)["texts"]) for r in recorder.requests] == [96, 4]
    assert recorder.body["input_type"] == "search_query"
    assert len(result.response["data"]) == 100 and result.usage.prompt_tokens == 0


def test_embeddings_reject_what_bedrock_cannot_do() -> None:
    recorder = Recorder("titan_embedding.json")
    with pytest.raises(errors.BadRequestError, match="Titan and Cohere"):
        embed(recorder, MODEL, input="x")
    with pytest.raises(errors.BadRequestError) as tokens:
        embed(recorder, TITAN, input=[[1, 2, 3]])
    assert tokens.value.param == "input"
    with pytest.raises(UnsupportedParamError) as fmt:
        embed(recorder, TITAN, input="x", encoding_format="base64")
    assert fmt.value.param == "encoding_format"
    assert not recorder.requests
    with pytest.raises(errors.MalformedResponseError):
        embed(lambda _: httpx.Response(200, json={"id": "x"}), TITAN, input="x")

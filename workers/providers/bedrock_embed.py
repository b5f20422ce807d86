"""Bedrock's InvokeModel embeddings bodies (Titan and Cohere), pure: the body of each
call for an OpenAI embeddings request, and the OpenAI embeddings list of the replies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.providers import bedrock_convert as convert
from workers.providers.base import ProviderResult, Usage
from workers.providers.params import check_params

__all__ = ["EMBED_FAMILIES", "EmbedFamily", "embed_family", "embed_payloads", "parse_embeddings"]


@dataclass(frozen=True, slots=True)
class EmbedFamily:
    """One InvokeModel embeddings body shape: how many inputs one call takes, the
    OpenAI parameters it honours, the body, and (vectors, tokens or None) of a reply."""

    batch: int
    params: tuple[str, ...]
    payload: Callable[[list[str], dict[str, Any]], dict[str, Any]]
    vectors: Callable[[dict[str, Any]], tuple[list[Any], int | None]]


def _titan_payload(texts: list[str], body: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"inputText": texts[0]}
    if body.get("dimensions") is not None:
        payload["dimensions"] = body["dimensions"]
    return payload


def _titan_vectors(data: dict[str, Any]) -> tuple[list[Any], int | None]:
    tokens = data.get("inputTextTokenCount")
    return [data.get("embedding")], tokens if isinstance(tokens, int) else None


def _cohere_payload(texts: list[str], body: dict[str, Any]) -> dict[str, Any]:
    return {"texts": texts, "input_type": body.get("input_type") or "search_document"}


def _cohere_vectors(data: dict[str, Any]) -> tuple[list[Any], int | None]:
    """`embeddings` is a list, or a dict by type when `embedding_types` was asked for."""
    vectors = data.get("embeddings")
    if isinstance(vectors, dict):
        vectors = vectors.get("float")
    return vectors if isinstance(vectors, list) else [], None


#: By a substring of the model id, so region prefixes (`us.`) and ARNs match too.
EMBED_FAMILIES: dict[str, EmbedFamily] = {
    "amazon.titan-embed": EmbedFamily(1, ("dimensions",), _titan_payload, _titan_vectors),
    # Cohere takes at most 96 texts per call.
    "cohere.embed": EmbedFamily(96, ("input_type",), _cohere_payload, _cohere_vectors),
}


def embed_family(model_id: str, provider: str) -> EmbedFamily:
    for key, family in EMBED_FAMILIES.items():
        if key in model_id:
            return family
    raise convert.bad(
        provider,
        f"{provider} embeddings support Titan and Cohere models, not {model_id!r}",
        "model",
    )


def embed_payloads(
    family: EmbedFamily, body: dict[str, Any], provider: str, drop: bool
) -> tuple[list[dict[str, Any]], int]:
    """One InvokeModel body per batch of input strings, and the number of inputs."""
    checked = check_params(convert.without_defaults(body), family.params, provider, drop)
    raw = checked.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise convert.bad(
            provider, "`input` must be a string or a non-empty list of strings", "input"
        )
    batches = range(0, len(texts), family.batch)
    return [family.payload(texts[k : k + family.batch], checked) for k in batches], len(texts)


def parse_embeddings(
    provider: str,
    family: EmbedFamily,
    replies: list[tuple[Any, int | None]],
    *,
    model: str,
    expected: int,
) -> ProviderResult:
    """The replies (JSON, token count from the reply headers) as an OpenAI embeddings
    `list`; token counts are summed where the body or the headers report them."""
    vectors: list[Any] = []
    tokens = 0
    for data, header_tokens in replies:
        if not isinstance(data, dict):
            raise convert.malformed(provider, "no embeddings object")
        found, body_tokens = family.vectors(data)
        vectors += found
        tokens += body_tokens if body_tokens is not None else header_tokens or 0
    if len(vectors) != expected or not all(isinstance(v, list) for v in vectors):
        raise convert.malformed(provider, f"{len(vectors)} embeddings for {expected} inputs")
    response = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return ProviderResult(response=response, usage=Usage(tokens, 0, tokens))

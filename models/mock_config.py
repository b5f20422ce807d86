"""Behaviour of the mock OpenAI-compatible provider.

The schema lives in `models/` rather than beside the server so that the CLI, test
fixtures and benchmark scripts can describe a mock provider (and ship it as JSON in
`LLMFLEET_MOCK_CONFIG`) without importing the server. Pure pydantic: no I/O, no
environment reads.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["LatencySpec", "MockConfig", "parse_latency"]

LatencyKind = Literal["fixed", "uniform", "normal", "exp"]
_ARITY: dict[str, int] = {"uniform": 2, "normal": 2, "exp": 1}


@dataclass(frozen=True)
class LatencySpec:
    """A parsed latency spec, so a bad string fails once at construction, not per request."""

    kind: LatencyKind
    params: tuple[float, ...]

    def sample(self, rng: random.Random) -> float:
        """Draw one delay; never negative, because a sleep cannot be."""
        if self.kind == "uniform":
            return rng.uniform(*self.params)
        if self.kind == "normal":
            return max(0.0, rng.gauss(*self.params))
        if self.kind == "exp":
            return rng.expovariate(1.0 / self.params[0])
        return self.params[0]


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} in latency spec {spec!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"latency spec {spec!r} needs finite, non-negative numbers")
    return value


@functools.lru_cache(maxsize=128)
def parse_latency(spec: str) -> LatencySpec:
    """Parse "2", "uniform:A,B", "normal:MEAN,SD" or "exp:MEAN" (seconds).

    Cached because every request samples the live spec; parsing it each time would be waste.
    """
    text = spec.strip()
    if ":" not in text:
        return LatencySpec("fixed", (_number(text, spec),))
    name, _, args = text.partition(":")
    kind = name.strip().lower()
    if kind not in _ARITY:
        raise ValueError(
            f"unknown latency distribution {name!r} in {spec!r}; use a number of seconds, "
            "'uniform:A,B', 'normal:MEAN,SD' or 'exp:MEAN'"
        )
    params = tuple(_number(part, spec) for part in args.split(","))
    if len(params) != _ARITY[kind]:
        raise ValueError(f"latency spec {spec!r} needs {_ARITY[kind]} number(s) after '{kind}:'")
    if kind == "uniform" and params[0] > params[1]:
        raise ValueError(f"latency spec {spec!r}: A must not exceed B")
    if kind == "exp" and params[0] == 0:
        raise ValueError(f"latency spec {spec!r}: the mean must be positive")
    return LatencySpec(cast(LatencyKind, kind), params)


class MockConfig(BaseModel):
    """How the mock provider misbehaves, so tests and benchmarks can dial in real-world faults.

    Random faults are drawn once per request with cumulative thresholds in the order
    429, 500, malformed, reset; if their rates sum past 1 the later ones get the remainder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    latency: str = Field(
        default="0",
        description="Seconds to wait: '0.05', 'uniform:A,B', 'normal:MEAN,SD' or 'exp:MEAN'.",
    )
    error_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Fraction answered 500 with an error body."
    )
    rate_429: float = Field(default=0.0, ge=0.0, le=1.0, description="Fraction answered 429.")
    retry_after: float | None = Field(
        default=1.0, ge=0.0, description="Retry-After seconds sent on every 429; none = no header."
    )
    hang_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Fraction that stall hang_seconds first."
    )
    hang_seconds: float = Field(
        default=600.0, ge=0.0, description="How long a hung request stalls."
    )
    malformed_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Fraction answered 200 with a non-JSON body."
    )
    reset_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Fraction whose TCP connection is reset instead of answered.",
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, description="Requests in flight beyond this get an immediate 429."
    )
    context_window: int | None = Field(
        default=None,
        ge=1,
        description="Prompts longer than this many words get 400 context_length_exceeded.",
    )
    seed: int | None = Field(default=None, description="Seed for reproducible fault draws.")
    reply: str = Field(
        default="echo", description="'echo' echoes the last user message; else this fixed text."
    )
    stream_chunks: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Content chunks of a streamed reply (its words, cycled); none = one a word.",
    )
    stream_interval: float = Field(
        default=0.0, ge=0.0, le=60.0, description="Seconds between two chunks of a stream."
    )

    @field_validator("latency")
    @classmethod
    def _latency_parses(cls, value: str) -> str:
        parse_latency(value)
        return value

    def sample_latency(self, rng: random.Random) -> float:
        """Draw this request's delay from the configured distribution."""
        return parse_latency(self.latency).sample(rng)

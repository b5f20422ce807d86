"""OpenAI parameters a provider lacks: dropped with a warning when `drop_params` is
on, otherwise the job fails with a 400 naming the parameter and the provider."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from workers.providers.errors import BadRequestError

__all__ = ["UnsupportedParamError", "check_params"]

log = logging.getLogger(__name__)

#: Keys every protocol understands or handles itself.
ALWAYS = frozenset({"model", "messages", "input"})


class UnsupportedParamError(BadRequestError):
    pass


def check_params(
    body: dict[str, Any], supported: Iterable[str], provider: str, drop: bool
) -> dict[str, Any]:
    """A copy of `body` holding only parameters the provider supports (None values
    count as unset)."""
    allowed = ALWAYS | frozenset(supported)
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in allowed or value is None:
            out[key] = value
        elif drop:
            log.warning("%s: dropped unsupported parameter %s", provider, key)
        else:
            raise UnsupportedParamError(
                f"{provider} does not support the parameter `{key}`; remove it, or set "
                "`drop_params: true` for the deployment to drop it",
                provider=provider,
                param=key,
                code="unsupported_parameter",
            )
    return out

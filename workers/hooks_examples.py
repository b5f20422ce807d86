"""Example hooks, ready to use from the fleet config:

```yaml
llmfleet_settings:
  pre_call_hooks: ["workers.hooks_examples:redact_emails"]
```
"""

from __future__ import annotations

import re
from typing import Any

from workers.hooks import HookJob

__all__ = ["EMAIL", "REDACTED_EMAIL", "redact_emails"]

#: Good enough for redaction: local part, @, a dotted domain with a 2+ letter TLD.
EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
REDACTED_EMAIL = "[email redacted]"


def redact_emails(request: dict[str, Any], job: HookJob) -> dict[str, Any]:
    """Pre-call: replace every e-mail address in the prompt (message texts of a chat
    request, `input` of an embeddings request) before any provider sees it."""
    for message in request.get("messages") or []:
        if isinstance(message, dict):
            message["content"] = _redact_content(message.get("content"))
    if "input" in request:
        request["input"] = _redact_content(request["input"])
    return request


def _redact_content(content: Any) -> Any:
    """A string, a list of strings (embeddings input) or a list of content parts."""
    if isinstance(content, str):
        return EMAIL.sub(REDACTED_EMAIL, content)
    if isinstance(content, list):
        return [_redact_part(part) for part in content]
    return content


def _redact_part(part: Any) -> Any:
    if isinstance(part, str):
        return EMAIL.sub(REDACTED_EMAIL, part)
    if isinstance(part, dict) and isinstance(part.get("text"), str):
        return {**part, "text": EMAIL.sub(REDACTED_EMAIL, part["text"])}
    return part

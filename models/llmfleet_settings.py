"""`llmfleet_settings`: the fleet config's own top-level section (LiteLLM has no such
key, so a LiteLLM config stays valid). Unknown keys in it are errors.

```yaml
llmfleet_settings:
  pre_call_hooks: ["workers.hooks_examples:redact_emails"]
  post_call_hooks: ["mycompany.guards:check_reply"]
```

Hooks are named by import path (`package.module:function`); the API only checks the
form, the workers import them at start (`workers/hooks.py`).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = ["IMPORT_PATH", "LlmfleetSettings"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
IMPORT_PATH = re.compile(rf"^{_NAME}(\.{_NAME})*:{_NAME}(\.{_NAME})*$")


class LlmfleetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Run in order before a job's first provider call: rewrite or reject the request.
    pre_call_hooks: tuple[str, ...] = ()
    #: Run in order on a successful response: inspect, redact, or reject it.
    post_call_hooks: tuple[str, ...] = ()

    @field_validator("pre_call_hooks", "post_call_hooks")
    @classmethod
    def _import_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in value if not IMPORT_PATH.match(p)]
        if bad:
            raise ValueError(f"{bad} are not import paths of the form `package.module:function`")
        return value

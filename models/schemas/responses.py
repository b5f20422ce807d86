"""OpenAI's Responses API across the HTTP border: `ResponseCreate` in (what the fleet
can translate to any provider; anything else is refused naming its field)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.wire import TokenCount

__all__ = ["FunctionTool", "ResponseCreate", "TextConfig", "TextFormat"]


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, max_length=64)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_named(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.schema_ is None):
            raise ValueError("a json_schema format needs `name` and `schema`")
        return self


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(BaseModel):
    """`reasoning`: its effort becomes the call's `reasoning_effort`; a summary is not
    produced (the chat completions a job runs have none)."""

    model_config = ConfigDict(extra="forbid")

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_obfuscation: bool | None = None


class ResponseCreate(BaseModel):
    """`POST /v1/responses`. `input` is text or a list of input items (messages,
    `function_call`, `function_call_output`), checked item by item when translated."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(min_length=1, max_length=255)
    input: str | Annotated[list[dict[str, Any]], Field(min_length=1)]
    instructions: str | None = None
    background: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    store: bool | None = None
    previous_response_id: str | None = Field(default=None, max_length=64)
    tools: list[FunctionTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: TokenCount | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16
    )
    user: str | None = Field(default=None, max_length=256)
    truncation: Literal["disabled"] | None = None
    reasoning: ReasoningConfig | None = None
    #: Extra output a client may ask for (reasoning items' encrypted content, logprobs,
    #: tool results): accepted, and absent from the output, as none is produced.
    include: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=16)] | None = (
        None
    )
    #: A provider-side prompt-cache hint: accepted and not forwarded (not every
    #: provider knows it).
    prompt_cache_key: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _background_is_stored(self) -> ResponseCreate:
        if self.background and self.store is False:
            raise ValueError("a background response must be stored: drop `store: false`")
        choice = self.tool_choice
        if isinstance(choice, str) and choice not in ("auto", "none", "required"):
            raise ValueError("`tool_choice` must be auto, none, required or a function")
        return self

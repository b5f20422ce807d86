"""GET /v1/models: the model groups this key may use, in OpenAI's list shape, so that
`openai`'s `models.list()` and `models.retrieve()` work against the fleet. Aliases
(`model_group_alias`) are listed as models of their own; a wildcard group (`openai/*`)
is listed by its pattern."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from producer_api.auth import Caller, require_key
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS, ApiError

router = APIRouter(
    route_class=BorderRoute, prefix="/v1/models", tags=["models"], responses=API_ERRORS
)


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "llmfleet"


class ModelsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


def _usable(ctx: ApiContext, caller: Caller) -> list[str]:
    aliases = ctx.config.router_settings.model_group_alias
    names = dict.fromkeys([*ctx.config.group_names(), *aliases])
    return [name for name in names if caller.may_use(name, aliases.get(name))]


@router.get("", response_model=ModelsPublic)
def list_models(
    ctx: Annotated[ApiContext, Depends(get_context)],
    caller: Annotated[Caller, Depends(require_key)],
) -> ModelsPublic:
    return ModelsPublic(data=[ModelPublic(id=name) for name in _usable(ctx, caller)])


@router.get("/{model:path}", response_model=ModelPublic)  # ids may hold a "/"
def retrieve_model(
    model: str,
    ctx: Annotated[ApiContext, Depends(get_context)],
    caller: Annotated[Caller, Depends(require_key)],
) -> ModelPublic:
    if model not in _usable(ctx, caller):
        raise ApiError(
            404,
            f"The model `{model}` does not exist or is not yours to use",
            code="model_not_found",
        )
    return ModelPublic(id=model)

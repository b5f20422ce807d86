"""/v1/config/warnings (admin): the keys of the fleet config that LiteLLM knows and
llmfleet does not honour, as dotted paths (also printed at each process's start)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from models.fleet_config import NOT_HONOURED
from producer_api.auth import Caller, require_admin
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS

router = APIRouter(
    route_class=BorderRoute, prefix="/v1/config", tags=["admin"], responses=API_ERRORS
)


class ConfigWarning(BaseModel):
    path: str
    message: str = NOT_HONOURED


class ConfigWarnings(BaseModel):
    object: str = "list"
    data: list[ConfigWarning]


@router.get("/warnings", response_model=ConfigWarnings)
async def config_warnings(
    ctx: Annotated[ApiContext, Depends(get_context)],
    _: Annotated[Caller, Depends(require_admin)],
) -> ConfigWarnings:
    return ConfigWarnings(data=[ConfigWarning(path=path) for path in ctx.config.warnings])

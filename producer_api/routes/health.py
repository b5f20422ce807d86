"""Liveness and readiness."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context

router = APIRouter(route_class=BorderRoute, tags=["health"])


@router.get("/healthz")
@router.get("/health/liveliness", include_in_schema=False)  # LiteLLM's spelling
@router.get("/health/liveness", include_in_schema=False)
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
@router.get("/health/readiness", include_in_schema=False)  # LiteLLM's name
async def readyz(ctx: Annotated[ApiContext, Depends(get_context)]) -> JSONResponse:
    """The process can serve: the database and Redis both answer."""
    checks: dict[str, str] = {}
    try:
        await run_in_threadpool(_ping_db, ctx)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        await ctx.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


def _ping_db(ctx: ApiContext) -> None:
    with ctx.engine.connect() as conn:
        conn.execute(text("SELECT 1"))

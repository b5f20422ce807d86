"""/ui: an operator's page of recent jobs, batches with live progress and, for the
admin, per-deployment health.

The page is rendered on the server; a little script on it polls the JSON endpoints
under /ui/api every second and redraws the tables with DOM text nodes (never HTML
from data). The key is typed once into a login form; the answer is a signed HttpOnly
cookie (`producer_api/ui_session.py`), so no key ever appears in a URL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from sqlalchemy import select

from models.accounting import money
from models.schemas.batches import RequestCounts
from models.schemas.keys import key_status
from models.tables import Batch, Job, utcnow
from producer_api.activity import last_hour
from producer_api.auth import Caller, caller_for_key
from producer_api.batches_service import view_batch
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import ApiError
from producer_api.keys_service import get_key
from producer_api.routes.deployments import DeploymentsPublic, list_deployments
from producer_api.ui_session import COOKIE_NAME, SESSION_SECONDS, read_session, sign_session

__all__ = ["router"]

router = APIRouter(route_class=BorderRoute, prefix="/ui", include_in_schema=False)
TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
POLL_MS = 1000

Ctx = Annotated[ApiContext, Depends(get_context)]


class UiJob(BaseModel):
    """A job as the page lists it: no prompt, no result."""

    id: str
    status: str
    model: str
    deployment: str | None
    priority: int
    attempts: int
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cost: str | None
    error_code: str | None
    batch_id: str | None
    created_at: int
    finished_at: int | None


class UiBatch(BaseModel):
    id: str
    api: str
    status: str
    model: str | None
    endpoint: str
    request_counts: RequestCounts
    created_at: int
    expires_at: int | None


class UiList(BaseModel):
    object: str = "list"
    data: list[UiJob] | list[UiBatch]


def session_caller(request: Request, ctx: ApiContext) -> Caller | None:
    """The signed-in caller. A virtual key's session ends as soon as the key is revoked
    or expires: its row is read again on every request."""
    token = request.cookies.get(COOKIE_NAME)
    master = ctx.settings.master_key
    if not token or master is None:
        return None
    caller = read_session(master, token)
    if caller is None or caller.is_admin:
        return caller
    try:
        row = get_key(ctx, caller.owner)
    except ApiError:
        return None
    if key_status(row) != "active":
        return None
    return Caller(owner=row.id, is_admin=False, grant=row.grant())


def require_session(request: Request, ctx: Ctx) -> Caller:
    caller = session_caller(request, ctx)
    if caller is None:
        raise ApiError(401, "sign in at /ui first", code="ui_session_required")
    return caller


SignedIn = Annotated[Caller, Depends(require_session)]


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """Every page gets a fresh nonce: the only scripts and styles that run are ours."""
    nonce = secrets.token_urlsafe(16)
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    headers = {
        "Content-Security-Policy": csp,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    context = {"nonce": nonce, **context}
    return TEMPLATES.TemplateResponse(request, template, context, status_code, headers)


@router.get("")
def ui_page(request: Request, ctx: Ctx) -> Response:
    """The dashboard when signed in, else the login form."""
    caller = session_caller(request, ctx)
    if caller is None:
        return _page(request, "ui_login.html")
    return _page(request, "ui.html", caller=caller, poll_ms=POLL_MS)


@router.post("/login")
def ui_login(request: Request, ctx: Ctx, key: Annotated[str, Form()] = "") -> Response:
    caller = caller_for_key(ctx, key)
    master = ctx.settings.master_key
    if caller is None or master is None:
        return _page(request, "ui_login.html", status_code=401, error="That key is not valid.")
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        sign_session(master, caller),
        max_age=SESSION_SECONDS,
        path="/ui",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
def ui_logout() -> Response:
    response = RedirectResponse("/ui", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/ui", httponly=True, samesite="strict")
    return response


def _epoch(value: dt.datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


@router.get("/api/jobs", response_model=UiList)
def ui_jobs(ctx: Ctx, caller: SignedIn, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> UiList:
    """The newest jobs, batch lines included (newest first by id: the primary key's
    index, so a poll costs `limit` rows however large the table)."""
    stmt = select(Job).order_by(Job.id.desc()).limit(limit)
    if not caller.is_admin:
        stmt = stmt.where(Job.owner_key == caller.owner)
    with ctx.sessions() as session:
        rows = list(session.scalars(stmt))
    data = [
        UiJob(
            id=j.id,
            status=j.status,
            model=j.model,
            deployment=j.deployment_id,
            priority=j.priority,
            attempts=j.attempts,
            prompt_tokens=j.prompt_tokens,
            completion_tokens=j.completion_tokens,
            total_tokens=j.total_tokens,
            cost=money(j.cost) if j.cost is not None else None,
            error_code=(j.error or {}).get("code"),
            batch_id=j.batch_id,
            created_at=int(j.created_at.timestamp()),
            finished_at=_epoch(j.finished_at),
        )
        for j in rows
    ]
    return UiList(data=data)


@router.get("/api/batches", response_model=UiList)
def ui_batches(
    ctx: Ctx, caller: SignedIn, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> UiList:
    """Recent batches of both wire shapes, with live request counts."""
    stmt = select(Batch).order_by(Batch.created_at.desc()).limit(limit)
    if not caller.is_admin:
        stmt = stmt.where(Batch.owner_key == caller.owner)
    with ctx.sessions() as session:
        rows = list(session.scalars(stmt))
    data = []
    for batch in rows:
        view = view_batch(ctx, batch)
        data.append(
            UiBatch(
                id=batch.id,
                api=batch.api,
                status=batch.status,
                model=batch.model,
                endpoint=batch.endpoint,
                request_counts=view.counts,
                created_at=int(batch.created_at.timestamp()),
                expires_at=_epoch(batch.expires_at),
            )
        )
    return UiList(data=data)


class UiMinute(BaseModel):
    start: int
    jobs_per_s: float
    p50_s: float | None
    spend: str


class UiActivity(BaseModel):
    object: str = "list"
    data: list[UiMinute]


@router.get("/api/activity", response_model=UiActivity)
def ui_activity(ctx: Ctx, caller: SignedIn) -> UiActivity:
    """The last hour by minute (producer_api.activity): the fleet's for the admin, the
    key's own for a virtual key."""
    with ctx.sessions() as session:
        minutes = last_hour(session, None if caller.is_admin else caller.owner, utcnow())
    return UiActivity(data=[UiMinute(**dataclasses.asdict(m)) for m in minutes])


@router.get("/api/deployments", response_model=DeploymentsPublic)
async def ui_deployments(ctx: Ctx, caller: SignedIn) -> DeploymentsPublic:
    """The admin's /v1/deployments, for a signed-in admin (checked here too, whatever
    the route it reuses checks)."""
    if not caller.is_admin:
        raise ApiError(403, "deployment health needs the admin key", code="admin_key_required")
    return await list_deployments(ctx, caller)

"""The execution core in one process, for tests: a WorkerContext on a real PostgreSQL
database and a real Redis, whose provider calls go to an `httpx.MockTransport` that
answers as a test scripts it. `Core.run` inserts a queued job and runs one delivery of
it through `execute.execute_job` (claim, route, call, retry, fall back, wait, store)."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import redis
import redis.asyncio as aioredis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from models.db import make_sessionmaker
from models.fleet_config import parse_fleet_config
from models.ids import new_id
from models.settings import WorkerSettings
from models.tables import Job, JobAttempt, JobStatus, utcnow
from tests.support.brokers import REDIS_BASE
from workers import execute
from workers.accounting.billing import PayerCache
from workers.admission import Admission
from workers.calls import Calls
from workers.delayed import DelayedJobs
from workers.event_loop import EventLoop
from workers.hooks import Hooks
from workers.leases import Leases
from workers.resources import WorkerContext
from workers.router import Router

__all__ = [
    "STATE_DB",
    "Core",
    "CoreFactory",
    "Provider",
    "Reply",
    "core_factory",
    "deployment",
    "malformed",
    "ok",
    "queued_job",
    "status",
    "timeout",
]

STATE_DB = 3
Reply = Callable[[httpx.Request], httpx.Response]


@dataclass
class Provider:
    """Scripted deployments: `replies[host]` answers each call to that api_base host in
    turn (the last one repeats); every call is counted per host."""

    replies: dict[str, list[Reply]]
    calls: dict[str, int] = field(default_factory=dict)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        n = self.calls.get(host, 0)
        self.calls[host] = n + 1
        script = self.replies[host]
        return script[min(n, len(script) - 1)](request)


def ok(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "fine"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        },
    )


def status(code: int, error_code: str | None = None, retry_after: str | None = None) -> Reply:
    def reply(_: httpx.Request) -> httpx.Response:
        headers = {"retry-after": retry_after} if retry_after else {}
        error = {"message": f"scripted {code}", "type": "x", "param": None, "code": error_code}
        return httpx.Response(code, json={"error": error}, headers=headers)

    return reply


def timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("scripted timeout", request=request)


def malformed(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"{not json")


def deployment(group: str, host: str) -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {"model": "openai_compatible/m", "api_base": f"http://{host}/v1"},
        "model_info": {"id": host},
    }


def queued_job(
    model: str = "main",
    job_id: str | None = None,
    request: dict[str, Any] | None = None,
    **fields: Any,
) -> Job:
    """A new queued chat job's row, as the API would insert it (`request` is added to
    a one-message chat body; `fields` set or replace the row's)."""
    now = utcnow()
    defaults: dict[str, Any] = {
        "attempts": 0,
        "calls": 0,
        "priority": 5,
        "created_at": now,
        "queued_at": now,
        "cancel_requested": False,
        "owner_key": "master",
        "cached": False,
    }
    return Job(
        id=job_id or new_id("job"),
        status=JobStatus.QUEUED,
        kind="chat.completions",
        model=model,
        request={
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            **(request or {}),
        },
        **(defaults | fields),
    )


@dataclass
class Core:
    ctx: WorkerContext
    sessions: sessionmaker[Session]
    provider: Provider

    def run(self, model: str = "main", **job: Any) -> Job:
        """Insert a queued job, run one delivery of it, and return its row."""
        row = queued_job(model, **job)
        job_id = row.id
        with self.sessions.begin() as session:
            session.add(row)
        execute.execute_job(self.ctx, job_id, lambda _delivery: None).result(timeout=120)
        with self.sessions() as session:
            stored = session.get(Job, job_id)
            assert stored is not None
            return stored

    def attempts(self, job_id: str) -> list[JobAttempt]:
        with self.sessions() as session:
            stmt = select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.id)
            return list(session.scalars(stmt))


CoreFactory = Callable[..., Core]


@contextlib.contextmanager
def core_factory(url: str, engine: Engine, state: redis.Redis) -> Iterator[CoreFactory]:
    """`make(replies, model_list, **router_settings)` builds a Core; all are closed
    when the block ends."""
    built: list[WorkerContext] = []

    def make(
        replies: dict[str, list[Reply]], model_list: list[dict[str, Any]], **router: Any
    ) -> Core:
        provider = Provider(replies)
        config = parse_fleet_config(
            {"model_list": model_list, "router_settings": {"num_retries": 2, **router}}, {}
        )
        settings = WorkerSettings.model_validate(
            {"DATABASE_URL": url, "REDIS_URL": f"{REDIS_BASE}/{STATE_DB}"}
        )
        sessions = make_sessionmaker(engine)
        rng = random.Random(7)
        transport = httpx.MockTransport(provider)
        loop_redis = aioredis.Redis.from_url(f"{REDIS_BASE}/{STATE_DB}")
        calls = Calls(EventLoop([httpx.AsyncClient(transport=transport)], loop_redis))
        router = Router(config, loop_redis, rng)
        ctx = WorkerContext(
            settings=settings,
            config=config,
            engine=engine,
            sessions=sessions,
            redis=state,
            http=httpx.Client(transport=transport),
            calls=calls,
            router=router,
            delayed=DelayedJobs(state),
            leases=Leases(sessions, 60, 600),
            payers=PayerCache(sessions),
            admission=Admission(2),
            rng=rng,
            hooks=Hooks(),
        )
        built.append(ctx)
        return Core(ctx, sessions, provider)

    try:
        yield make
    finally:
        for ctx in built:
            ctx.writer.close()
            ctx.claimer.close()
            ctx.interactive_claimer.close()
            ctx.leases.stop()
            ctx.calls.close()

"""The budget check before a job's calls: a key (or its customer) whose budget is used
up gets no provider call; the job fails with a clear error naming the budget."""

from __future__ import annotations

from models.budgets import budgets_for, check_budgets
from models.tables import JobStatus, utcnow
from models.tenancy import ApiKey
from workers.jobstore import Claim, Outcome
from workers.resources import WorkerContext

__all__ = ["pre_check"]


def pre_check(ctx: WorkerContext, claim: Claim) -> Outcome | None:
    with ctx.sessions() as session:
        key = session.get(ApiKey, claim.owner)
        customer_id = key.customer_id if key is not None else None
        budgets = budgets_for(session, claim.owner, customer_id)
        denial = check_budgets(session, ctx.redis, budgets, utcnow()) if budgets else None
    if denial is None:
        return None
    return Outcome(
        JobStatus.FAILED,
        error={
            "message": f"budget exceeded: {denial.message}",
            "type": "insufficient_quota",
            "param": "budget",
            "code": "budget_exceeded",
            "status_code": 429,
        },
    )

"""The budget check before a job's calls: a key (or its customer) whose budget is used
up gets no provider call; the job fails with a clear error naming the budget.

Which budgets apply comes from the process's payer cache (a few seconds old at most);
how much of each is spent comes from its counter in Redis, read on every check."""

from __future__ import annotations

from models.budgets import check_budgets
from models.tables import JobStatus, utcnow
from workers.jobstore import Claim, Outcome
from workers.resources import WorkerContext

__all__ = ["pre_check"]


def pre_check(ctx: WorkerContext, claim: Claim) -> Outcome | None:
    budgets = list(ctx.payers.get(claim.owner).budgets)
    if not budgets:
        return None
    with ctx.sessions() as session:
        denial = check_budgets(session, ctx.redis, budgets, utcnow())
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

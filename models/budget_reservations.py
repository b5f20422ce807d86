"""Budgets reserved, not only checked: an interactive job reserves its estimated cost
against each budget it falls under when it is accepted, and releases it when it ends
(after its spend was counted). A job is accepted while a budget's spend plus what jobs
in flight reserved is under its maximum, so concurrent jobs cannot all pass a check
that none of them has paid into yet: the overshoot is bounded by about one job's
estimate, not by the concurrency.

A reservation lapses at the job's deadline, so one whose release was lost (a worker
killed between the end and the release) stops counting by itself. Redis holds only
these amounts (soft state, like the spend counters); the spend rows are the truth."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from models import redis_keys as rk
from models.accounting import Budget
from models.budgets import period_bounds

__all__ = ["Overbooked", "Reservations"]

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local job, amount, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = #KEYS - 1
for i = 1, n do
  local z = KEYS[i + 1]
  local h = z .. ':amounts'
  for _, lapsed in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now)) do
    redis.call('HDEL', h, lapsed)
  end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  local reserved = 0
  for _, v in ipairs(redis.call('HVALS', h)) do reserved = reserved + tonumber(v) end
  local spent, max = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if spent + reserved >= max then
    return {0, i, tostring(reserved)}
  end
end
for i = 1, n do
  local z = KEYS[i + 1]
  local h = z .. ':amounts'
  redis.call('ZADD', z, now + ttl, job)
  redis.call('HSET', h, job, amount)
  if redis.call('PTTL', z) < ttl then
    redis.call('PEXPIRE', z, ttl)
    redis.call('PEXPIRE', h, ttl)
  end
  redis.call('SADD', KEYS[1], z)
end
redis.call('PEXPIRE', KEYS[1], ttl)
return {1}
"""

_RELEASE = """
for _, z in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('ZREM', z, ARGV[1])
  redis.call('HDEL', z .. ':amounts', ARGV[1])
end
return redis.call('DEL', KEYS[1])
"""


@dataclass(frozen=True, slots=True)
class Overbooked:
    """A budget whose spend and reservations leave no room for another job."""

    budget: Budget
    spent: Decimal
    reserved: Decimal


class Reservations:
    def __init__(self, client: Any) -> None:
        """`client`: redis-py's sync client (any with `register_script`)."""
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)

    def reserve(
        self,
        job_id: str,
        amount: Decimal,
        budgets: list[tuple[Budget, Decimal]],
        until: dt.datetime,
        now: dt.datetime,
    ) -> Overbooked | None:
        """Reserve `amount` against every (budget, spent so far) pair, until `until`;
        or, reserving nothing, say which budget has no room left."""
        if not budgets:
            return None
        keys = [rk.budget_hold(job_id)]
        args: list[Any] = [
            job_id,
            str(amount),
            max(1000, int((until - now).total_seconds() * 1000)),
        ]
        for budget, spent in budgets:
            start, _ = period_bounds(budget.period, now)
            keys.append(rk.budget_reserved(budget.id, int(start.timestamp())))
            args += [str(spent), str(budget.max_spend)]
        result = self._reserve(keys=keys, args=args)
        if int(result[0]) == 1:
            return None
        budget, spent = budgets[int(result[1]) - 1]
        reserved = result[2].decode() if isinstance(result[2], bytes) else str(result[2])
        return Overbooked(budget, spent, Decimal(reserved))

    def release(self, job_id: str) -> None:
        """The job has ended and its spend is counted: its reservations go."""
        self._release(keys=[rk.budget_hold(job_id)], args=[job_id])

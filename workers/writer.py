"""One thread per worker process that stores what runs on the event loop came to.

A job whose calls run on the loop is claimed and handed over by its task, which then
returns (its message is acknowledged: from then on the job's row and lease stand for
it). As each run ends, its end goes on this writer's queue; the writer takes everything
queued at once and stores it in one call of `run_store.store`: the ends of interactive
jobs and batch lines, of any message, share one transaction (group commit, with no
wait added: ends queue up while the previous commit runs). Once stored, a run's lease
is released and its admission slot given back.

A run that raised (a database or Redis outage while it ran) is not stored: its lease
lapses and the sweeper hands the job on. Nor is a batch that the store could not take
within its outage budget (`run_store.store` waits out a lease's worth)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.grouping import GroupThread
from models.tables import JobStatus
from workers.jobstore import Claim
from workers.leases import Leases

if TYPE_CHECKING:
    from workers.run_store import Ran

__all__ = ["EndWriter", "Handed"]

log = logging.getLogger(__name__)

#: Ends stored in one transaction, at most.
MAX_GROUP = 500
#: How long `close` waits for the ends handed over to be stored.
CLOSE_TIMEOUT_S = 30.0

Store = Callable[[Sequence["Ran"], Callable[[str], None]], list[JobStatus | None]]


@dataclass(frozen=True, slots=True)
class Handed:
    """A claim handed over to the loop: what its run comes to, the lease held for it,
    what to do once it is stored (give back its slots), and the future of its status."""

    claimed: Claim
    ran: Future[Ran]
    lease: int
    publish_webhook: Callable[[str], None]
    after: Callable[[], None]
    stored: Future[JobStatus | None]


class EndWriter:
    def __init__(self, store: Store, leases: Leases) -> None:
        self._store = store
        self._leases = leases
        self._open = 0
        self._cond = threading.Condition()
        self._thread = GroupThread("llmfleet-writer", MAX_GROUP, self._round)

    def hand(
        self,
        claimed: Claim,
        ran: Future[Ran],
        lease: int,
        publish_webhook: Callable[[str], None],
        after: Callable[[], None],
    ) -> Future[JobStatus | None]:
        """Store `ran`'s result once it is done; returns the future of its status."""
        handed = Handed(claimed, ran, lease, publish_webhook, after, Future())
        with self._cond:
            self._open += 1
        ran.add_done_callback(lambda _: self._thread.put(handed))
        return handed.stored

    def drain(self, timeout: float) -> bool:
        """Wait until every run handed over is stored (or `timeout`); True if so."""
        with self._cond:
            return self._cond.wait_for(lambda: self._open == 0, timeout)

    def close(self) -> None:
        self._thread.close(CLOSE_TIMEOUT_S)

    def _round(self, group: list[Handed]) -> None:
        try:
            self._store_group(group)
        finally:
            for handed in group:
                self._leases.release(handed.lease)
                handed.after()
            with self._cond:
                self._open -= len(group)
                self._cond.notify_all()

    def _store_group(self, group: list[Handed]) -> None:
        runs: dict[Callable[[str], None], list[tuple[Handed, Ran]]] = {}
        for handed in group:
            try:
                ran = handed.ran.result()
            except (Exception, CancelledError) as exc:
                # Left `running`: its lease lapses and the sweeper hands it on.
                claimed = handed.claimed
                log.warning(
                    "job %s attempt %d: not stored: %s",
                    claimed.job_id,
                    claimed.attempt,
                    type(exc).__name__,
                )
                handed.stored.set_exception(exc)
                continue
            runs.setdefault(handed.publish_webhook, []).append((handed, ran))
        for publish, pairs in runs.items():
            try:
                statuses = self._store([ran for _, ran in pairs], publish)
            except Exception as exc:
                log.warning("%d end(s) not stored: %s", len(pairs), type(exc).__name__)
                for handed, _ in pairs:
                    handed.stored.set_exception(exc)
                continue
            for (handed, _), status in zip(pairs, statuses, strict=True):
                handed.stored.set_result(status)

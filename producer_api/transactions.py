"""Writes at intake that survive one dropped database connection.

Why: a pooled connection can die between its checkout (pre-pinged) and its use: a
server restart, a killed backend, a failover. Such an error says nothing about the
request, so the write is tried once more on a fresh connection (the pool discards the
dead one, and every connection as old, when it sees the disconnect). A second failure
is the database's: the error handler answers 503 with Retry-After, never 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["add", "add_all", "is_transient", "write"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """A lost connection or an unreachable server, as opposed to a refused statement."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def write(sessions: sessionmaker[Session], work: Callable[[Session, bool], T]) -> T:
    """`work(session, retried)` in one transaction, once more if the connection was lost.
    `retried` tells `work` that its first try may have committed before the connection
    went (the commit's answer was lost), so it must write idempotently."""
    try:
        with sessions.begin() as session:
            return work(session, False)
    except DBAPIError as exc:
        if not is_transient(exc):
            raise
        log.warning(
            "database connection lost during a write (%s); trying once more",
            type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__,
        )
    with sessions.begin() as session:
        return work(session, True)


def add(sessions: sessionmaker[Session], row: object) -> None:
    """Insert `row` by `write`: the retry merges, since the first try may have committed."""
    add_all(sessions, [row])


def add_all(sessions: sessionmaker[Session], rows: Sequence[object]) -> None:
    """Insert `rows` in one transaction by `write`, kind by kind in the order each kind
    first appears (a row that refers to another comes after it: a response's record
    after its job); the retry merges, since the first try may have committed."""

    def insert(session: Session, retried: bool) -> None:
        for kind in dict.fromkeys(type(row) for row in rows):
            for row in (r for r in rows if type(r) is kind):
                if retried:
                    session.merge(row)
                else:
                    session.add(row)
            session.flush()

    write(sessions, insert)

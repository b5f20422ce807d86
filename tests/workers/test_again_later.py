"""A task that meets a passing outage sends itself again later; when the broker cannot
take that new message either, the message in hand goes back to the broker instead of
being acknowledged with the unclaimed jobs it carries."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery, Task
from celery.exceptions import Reject, Retry

from tests.support.processes import free_port
from tests.support.servers import PrivateRedis
from workers.tasks import _again_later

QUEUE = "again"


def bound_task(broker_url: str) -> Task:
    app = Celery("again", broker=broker_url)
    app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0}
    app.conf.task_default_queue = QUEUE

    @app.task(bind=True, name="again.lines")
    def lines(self: Task, job_ids: list[str]) -> None: ...

    lines.push_request(
        id="task-1", args=[["job_1", "job_2"]], kwargs={}, retries=2, called_directly=False
    )
    return lines


def test_sends_itself_again_with_a_backoff(tmp_path: Path) -> None:
    # Given a task running from a message, its broker up
    with PrivateRedis.running(tmp_path) as server:
        task = bound_task(f"{server.url}/0")
        # When it asks to run again later
        with pytest.raises(Retry) as raised:
            _again_later(task)
        # Then the new message is in the broker, its countdown doubled per try
        assert raised.value.when == 4
        with server.client() as client:
            assert client.llen(QUEUE) == 1


def test_hands_its_message_back_when_the_broker_refuses_the_new_one() -> None:
    # Given a task whose broker refuses connections
    task = bound_task(f"redis://127.0.0.1:{free_port()}/0")
    # When it asks to run again later
    with pytest.raises(Reject) as raised:
        _again_later(task)
    # Then its own message is rejected with requeue (back to the broker), not acknowledged
    assert raised.value.requeue is True

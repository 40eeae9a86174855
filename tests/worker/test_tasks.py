"""Celery task names are stored in queued messages: a rename would strand every message already in Redis."""

from __future__ import annotations

import pytest
from kombu import Producer

from config.celery_app import CRM_QUEUE, ROUTINE_QUEUE, WORK_QUEUE, WORK_QUEUES, app
from config.settings import Settings
from worker import tasks
from worker.delivery import dispatch
from worker.delivery.sweeper import Stale

QUEUED_NAMES = {
    "admitflow.process_submission",
    "admitflow.process_submissions",
    "admitflow.deliver_outbox",
    "admitflow.hand_on",
    "admitflow.poll",
    "admitflow.sweep",
    "admitflow.escalate_due",
    "admitflow.escalate",
}


def test_every_task_name_that_may_be_queued_is_still_registered() -> None:
    registered = {name for name in app.tasks if name.startswith("admitflow.")}

    assert tasks.__name__ == "worker.tasks"
    assert registered >= QUEUED_NAMES


def test_the_dispatcher_sends_only_names_the_worker_registers() -> None:
    sent = {dispatch.PROCESS_SUBMISSION, dispatch.PROCESS_SUBMISSIONS, dispatch.DELIVER_OUTBOX}

    assert sent <= {name for name in app.tasks}


def test_the_sweeper_counts_the_crms_waiting_work_as_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """While CRM work waits in its own queue, stale rows are not offered again (they may be among it)."""
    monkeypatch.setattr(app.conf, "broker_url", "memory://")
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in (*WORK_QUEUES, ROUTINE_QUEUE):
            channel.queue_declare(queue=queue)
            channel.queue_purge(queue)
        try:
            assert tasks._queued_messages() == 0
            producer = Producer(channel)
            for body, queue in (("sync 1", CRM_QUEUE), ("sync 2", CRM_QUEUE), ("page", WORK_QUEUE),
                                ("heartbeat", ROUTINE_QUEUE)):  # a routine is not work waiting
                producer.publish(body, routing_key=queue)
            assert tasks._queued_messages() == 3
        finally:
            for queue in (*WORK_QUEUES, ROUTINE_QUEUE):
                channel.queue_purge(queue)


def test_a_sweep_hands_the_rows_it_found_on_in_pages_so_their_texts_go_out_side_by_side(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = Stale(submission_ids=[], outbox_ids=list(range(1, 121)), expired_outbox_ids=[])
    monkeypatch.setattr(tasks, "sweep", lambda *_, **__: found)
    monkeypatch.setattr(tasks, "_queued_messages", lambda: 0)
    monkeypatch.setattr(tasks.CeleryDispatcher, "submissions_stored", lambda self, ids: None)
    pages: list[list[int]] = []
    monkeypatch.setattr(tasks.hand_on_task, "delay", pages.append)

    tasks.sweep_task()

    assert pages == [list(range(1, 51)), list(range(51, 101)), list(range(101, 121))]

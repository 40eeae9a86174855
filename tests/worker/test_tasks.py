"""Celery task names are stored in queued messages: a rename would strand every message already in Redis."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from kombu import Producer
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.celery_app import CRM_QUEUE, ROUTINE_QUEUE, WORK_QUEUE, WORK_QUEUES, app
from config.settings import Settings
from tests.worker.delivery.test_crm_batches import BatchingCRM
from tests.worker.delivery.test_hand_on import processed_page
from tests.worker.delivery.test_outbox import services
from worker import tasks
from worker.delivery import dispatch
from worker.delivery.sweeper import Stale
from worker.store.db import utcnow
from worker.store.models import OutboxKind, OutboxMessage

QUEUED_NAMES = {
    "admitflow.process_submission",
    "admitflow.process_submissions",
    "admitflow.deliver_outbox",
    "admitflow.deliver_outbox_rows",
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
    sent = {dispatch.PROCESS_SUBMISSION, dispatch.PROCESS_SUBMISSIONS, dispatch.DELIVER_OUTBOX,
            dispatch.DELIVER_OUTBOX_ROWS}

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
    found = Stale(submission_ids=[], outbox_ids=list(range(1, 121)), expired_outbox_ids=list(range(200, 260)))
    monkeypatch.setattr(tasks, "sweep", lambda *_, **__: found)
    monkeypatch.setattr(tasks, "_queued_messages", lambda: 0)
    monkeypatch.setattr(tasks.CeleryDispatcher, "submissions_stored", lambda self, ids: None)
    pages: list[list[int]] = []
    monkeypatch.setattr(tasks.hand_on_task, "delay", pages.append)
    overdue: list[tuple[list[int], str | None]] = []
    monkeypatch.setattr(tasks.hand_on_task, "apply_async", lambda args, queue=None: overdue.append((args[0], queue)))
    one_by_one: list[Any] = []
    monkeypatch.setattr(tasks.deliver_outbox_task, "apply_async", lambda *args, **kwargs: one_by_one.append(args))

    tasks.sweep_task()

    assert pages == [list(range(1, 51)), list(range(51, 101)), list(range(101, 121))]
    # A dead worker's rows go ahead of the backlog, and as pages whose texts go out side by side, not a pool task each.
    assert overdue == [(list(range(200, 250)), ROUTINE_QUEUE), (list(range(250, 260)), ROUTINE_QUEUE)]
    assert one_by_one == []


def test_a_pages_syncs_waiting_for_one_batch_go_to_the_crm_queue_as_one_message(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, Any, str | None, float | None]] = []
    monkeypatch.setattr(dispatch, "_send", lambda name, item, queue=None, countdown=None:
                        sent.append((name, item, queue, countdown)))

    dispatch.CeleryDispatcher().crm_ready([5, 6, 7], linger=1.5)
    dispatch.CeleryDispatcher().crm_ready([8, 9])  # no batch to wait for: each row on its own

    assert sent == [(dispatch.DELIVER_OUTBOX_ROWS, [5, 6, 7], CRM_QUEUE, 1.5),
                    (dispatch.DELIVER_OUTBOX, 8, CRM_QUEUE, None), (dispatch.DELIVER_OUTBOX, 9, CRM_QUEUE, None)]


def test_crm_rows_due_again_after_the_same_wait_go_back_as_one_message_and_texts_each_alone(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, Any, float, str | None]] = []
    for task in (tasks.deliver_outbox_task, tasks.deliver_outbox_rows_task):
        monkeypatch.setattr(task, "apply_async", lambda args, countdown, queue, name=task.name:
                            sent.append((name, args[0], countdown, queue)))
    failed_together, alone = timedelta(seconds=2), timedelta(seconds=5)

    tasks._retry_later([(1, failed_together), (2, failed_together), (3, alone), (4, None),
                        (5, timedelta(hours=1))], queue=CRM_QUEUE)
    tasks._retry_later([(6, failed_together), (7, failed_together)])

    assert sent == [("admitflow.deliver_outbox_rows", [1, 2], 2.0, CRM_QUEUE),
                    ("admitflow.deliver_outbox", 3, 5.0, CRM_QUEUE),
                    ("admitflow.deliver_outbox", 6, 2.0, None), ("admitflow.deliver_outbox", 7, 2.0, None)]


def test_the_message_of_a_pages_syncs_delivers_them_in_one_batch_and_ends_the_rest_after_a_read(
    session: Session, settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox_ids = processed_page(session, settings, form_object, 3)
    syncs = list(session.scalars(select(OutboxMessage.id).where(
        OutboxMessage.id.in_(outbox_ids), OutboxMessage.kind == OutboxKind.CRM_SYNC)))
    session.execute(update(OutboxMessage).values(created_at=utcnow() - timedelta(minutes=1)))  # the linger is over
    session.commit()
    crm = BatchingCRM()
    monkeypatch.setattr(tasks, "default_services", lambda: services(settings, crm=crm))
    again: list[Any] = []
    monkeypatch.setattr(tasks, "_retry_later", lambda due, queue=None: again.extend(due))

    tasks.deliver_outbox_rows_task(syncs)

    assert [(step, len(keys)) for step, keys, _ in crm.calls] == [("contacts", 3), ("notes", 3), ("tasks", 3)]
    assert set(session.scalars(select(OutboxMessage.state).where(OutboxMessage.id.in_(syncs)))) == {"delivered"}
    assert [retry_in for _, retry_in in again] == [None, None, None], "nothing due again"

"""Celery task names are stored in queued messages: a rename would strand every message already in Redis."""

from __future__ import annotations

from config.celery_app import app
from worker import tasks
from worker.delivery import dispatch

QUEUED_NAMES = {
    "admitflow.process_submission",
    "admitflow.process_submissions",
    "admitflow.deliver_outbox",
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

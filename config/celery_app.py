"""The Celery app: JSON only, at-least-once delivery, and the beat schedule.

Settings reference: https://docs.celeryq.dev/en/stable/userguide/configuration.html
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import beat_init

from config.settings import get_settings

settings = get_settings()

ROUTINE_QUEUE = "admitflow-routine"
WORK_QUEUE = "admitflow"
# CRM work (syncs, assignments, call logs) has a queue of its own, which a worker takes from only when nothing
# waits in the others: a CRM backlog (a slow or rate-limiting CRM, a backfill's syncs) never stands between a new
# submission and the staff text it brings; the CRM catches up when intake lets it.
CRM_QUEUE = "admitflow-crm"
WORK_QUEUES = (WORK_QUEUE, CRM_QUEUE)
# The order a worker takes from its queues (the Redis transport's "priority" order: the first with a message).
QUEUES_BY_PRIORITY = (ROUTINE_QUEUE, WORK_QUEUE, CRM_QUEUE)


def _every(seconds: float, task: str) -> dict[str, Any]:
    return {"task": task, "schedule": seconds, "options": {"expires": seconds}}


app = Celery("admitflow")
app.conf.update(
    broker_url=settings.celery_broker_url or "memory://",
    broker_connection_retry_on_startup=True,
    # Redis re-delivers a task whose worker has not acknowledged it within this time; it must outlast the longest
    # task (the hard time limit below), or a slow task would run twice at once.
    broker_transport_options={"visibility_timeout": settings.celery_visibility_timeout_seconds,
                              "queue_order_strategy": "priority"},
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    # At least once: acknowledge after the task ran, and re-queue a task whose worker died under it.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # A broker restart must not kill running tasks: one killed between Twilio's answer and our commit would text
    # staff twice when it is retried. A task that finishes after a lost connection cannot be acknowledged, so it is
    # re-delivered after the visibility timeout and finds its work done.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    task_soft_time_limit=60,
    task_time_limit=90,
    task_default_queue=WORK_QUEUE,
    # Beat's routines (heartbeat, sweep, poll, escalation check) have a queue of their own, which every worker also
    # takes from in turn: a backlog of entries (a backfill) neither delays reminders nor makes beat look dead.
    task_routes={name: {"queue": ROUTINE_QUEUE} for name in
                 ("admitflow.heartbeat", "admitflow.sweep", "admitflow.poll", "admitflow.escalate_due")},
    worker_hijack_root_logger=False,
    imports=["worker.tasks"],
    # Each routine expires when the next run is due: one not run by then is pointless, and runs sent while the
    # workers were down do not pile up in the routine queue ahead of the sweep that recovers their work.
    beat_schedule={
        "sweep": _every(settings.sweep_interval_seconds, "admitflow.sweep"),
        # Each form keeps its own due time (and backoff) in the database; this only looks for due ones.
        "poll": _every(min(15.0, settings.poll_interval_seconds), "admitflow.poll"),
        # Reminder and escalation timers are rows with due times; this only takes the due ones.
        "escalate": _every(settings.escalation_interval_seconds, "admitflow.escalate_due"),
        # A worker writes a heartbeat row; its age says beat, the broker and a worker work.
        "heartbeat": _every(settings.heartbeat_seconds, "admitflow.heartbeat"),
    },
)

# Tasks beat sends on a timer: a run of one is routine, not news, so the worker and beat do not log each one.
ROUTINE_TASKS = frozenset(entry["task"] for entry in app.conf.beat_schedule.values())


def _heartbeat_at_start(sender: Any = None, **_: Any) -> None:
    """The first heartbeat as beat starts, not one interval later: /healthz is ready as soon as the stack is."""
    app.send_task("admitflow.heartbeat", expires=settings.heartbeat_seconds)


beat_init.connect(_heartbeat_at_start, weak=False)

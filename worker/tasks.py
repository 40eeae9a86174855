"""Celery tasks: a few lines each, ids in, plain functions doing the work."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import timedelta

from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown
from sqlalchemy.exc import OperationalError

from config.celery_app import CRM_QUEUE, ROUTINE_QUEUE, WORK_QUEUES, app
from config.sites import load_sites
from worker.delivery.dispatch import CeleryDispatcher, hand_on, pages, process_stored
from worker.delivery.outbox import deliver
from worker.delivery.sweeper import sweep
from worker.intake.poller import run_due_polls
from worker.leads.processing import process_submission
from worker.ops import liveness
from worker.staff.escalation import escalate, lease_due_timers
from worker.staff.phone_line import close_stale_calls
from worker.staff.roster import RosterError
from worker.staff.services import default_services
from worker.staff.templates import TemplateError
from worker.store.db import forget_inherited_connections, session_scope, utcnow
from worker.store.leases import keeper, worker_name

log = logging.getLogger(__name__)

# Longer waits are left to the sweeper, which reads due times from the database.
MAX_BROKER_COUNTDOWN = timedelta(minutes=5)
# How long one task delivers CRM rows it was given together, well within the task's soft time limit.
ROWS_IN_ONE_TASK_SECONDS = 20.0


# A database that is restarting or unreachable: retry soon, with backoff; the sweeper is the net under this.
DATABASE_RETRY = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 10,
}


@worker_process_init.connect
def _own_database_connections(**_: object) -> None:
    forget_inherited_connections()


@worker_ready.connect
def _announce_worker(**_: object) -> None:
    """A row renewed while this worker lives: when it runs out, the sweeper offers again what it held."""
    keeper.announce_worker(worker_name())


@worker_shutdown.connect
@worker_process_shutdown.connect
def _stop_lease_keeper(**_: object) -> None:
    keeper.stop()


@app.task(name="admitflow.process_submission", **DATABASE_RETRY)
def process_submission_task(submission_id: int) -> None:
    services = default_services()
    with session_scope() as session:
        outcome = process_submission(session, submission_id, services.settings)
    _retry_later(hand_on(outcome.outbox_ids, services, CeleryDispatcher()))


@app.task(name="admitflow.process_submissions", **DATABASE_RETRY)
def process_submissions_task(submission_ids: list[int]) -> None:
    services = default_services()
    outcomes = process_stored(submission_ids, services.settings, take_waiting=True)
    outbox_ids = [outbox_id for outcome in outcomes for outbox_id in outcome.outbox_ids]
    _retry_later(hand_on(outbox_ids, services, CeleryDispatcher()))


@app.task(name="admitflow.deliver_outbox", **DATABASE_RETRY)
def deliver_outbox_task(outbox_id: int) -> None:
    with session_scope() as session:
        delivery = deliver(session, outbox_id, default_services())
    # CRM work retries in the CRM's lane (a batch's rows too), whichever queue brought it; the rest in the work queue.
    _retry_later([(outbox_id, delivery.retry_in), *delivery.others_due], queue=CRM_QUEUE if delivery.crm else None)


@app.task(name="admitflow.deliver_outbox_rows", **DATABASE_RETRY)
def deliver_outbox_rows_task(outbox_ids: list[int]) -> None:
    """CRM rows that were ready together (a page's new syncs, a batch due again): delivered in order, so the first
    carries the others its batch can take, and each of them then ends after one read. Rows not reached within
    `ROWS_IN_ONE_TASK_SECONDS` (a slow CRM) go back to the queue as a message of their own."""
    services = default_services()
    until = time.monotonic() + ROWS_IN_ONE_TASK_SECONDS
    due: list[tuple[int, timedelta | None]] = []
    for place, outbox_id in enumerate(outbox_ids):
        if time.monotonic() > until:
            deliver_outbox_rows_task.apply_async((outbox_ids[place:],), queue=CRM_QUEUE)
            break
        with session_scope() as session:
            delivery = deliver(session, outbox_id, services)
        due += [(outbox_id, delivery.retry_in), *delivery.others_due]
    _retry_later(due, queue=CRM_QUEUE)


@app.task(name="admitflow.hand_on", **DATABASE_RETRY)
def hand_on_task(outbox_ids: list[int]) -> None:
    """Rows of any kind, passed on as a processed page's are: texts sent side by side, CRM work to its queue."""
    _retry_later(hand_on(outbox_ids, default_services(), CeleryDispatcher()))


def _retry_later(due: Iterable[tuple[int, timedelta | None]], queue: str | None = None) -> None:
    """Send each row due again soon back through the broker (to `queue`, else the work queue), after its wait;
    the sweeper takes longer waits. CRM rows due after the same wait (a batch that failed together) go back as
    one message, as they will go out in one batch."""
    together: dict[timedelta, list[int]] = {}
    for row_id, retry_in in due:
        if retry_in is None or retry_in > MAX_BROKER_COUNTDOWN:
            continue
        if queue == CRM_QUEUE:
            together.setdefault(retry_in, []).append(row_id)
        else:
            deliver_outbox_task.apply_async((row_id,), countdown=retry_in.total_seconds(), queue=queue)
    for retry_in, row_ids in together.items():
        if len(row_ids) == 1:
            deliver_outbox_task.apply_async((row_ids[0],), countdown=retry_in.total_seconds(), queue=queue)
        else:
            deliver_outbox_rows_task.apply_async((row_ids,), countdown=retry_in.total_seconds(), queue=queue)


@app.task(name="admitflow.heartbeat")
def heartbeat_task() -> None:
    """Beat sends this every ADMITFLOW_HEARTBEAT_SECONDS: its row's age says beat, the broker and a worker work."""
    with session_scope() as session:
        liveness.record_run(session, liveness.HEARTBEAT, utcnow())


@app.task(name="admitflow.poll")
def poll_task() -> None:
    settings = default_services().settings
    with session_scope() as session:
        results = run_due_polls(session, load_sites(settings), settings)
        liveness.record_run(session, liveness.POLL, utcnow(), sum(len(result.new_submission_ids) for result in results))
    dispatcher = CeleryDispatcher()
    for result in results:
        dispatcher.submissions_stored(result.released_submission_ids + result.new_submission_ids)


@app.task(name="admitflow.sweep")
def sweep_task() -> None:
    settings = default_services().settings
    with session_scope() as session:
        found = sweep(session, utcnow(), stale_after=timedelta(seconds=settings.stale_after_seconds),
                      queued=_queued_messages())
        liveness.record_run(session, liveness.SWEEP, utcnow(), found.count)
    with session_scope() as session:
        ended_calls = close_stale_calls(session, settings, utcnow())
    # Rows whose worker died delivering them are overdue: a page at a time through the queue a backlog does not hold
    # up, so their texts go out side by side, not one pool task each behind the routines (their CRM work goes on to
    # the CRM queue).
    for page in pages(found.expired_outbox_ids):
        hand_on_task.apply_async((page,), queue=ROUTINE_QUEUE)
    CeleryDispatcher().submissions_stored(found.submission_ids + ended_calls)
    for page in pages(found.outbox_ids):  # after a worker died, its pages' texts: side by side again
        hand_on_task.delay(page)
    if found.count:
        log.info("sweep re-dispatched %d submission(s) and %d outbox row(s) (%d whose worker died mid-delivery)",
                 len(found.submission_ids), len(found.outbox_ids) + len(found.expired_outbox_ids),
                 len(found.expired_outbox_ids))


def _queued_messages() -> int | None:
    """Task messages waiting in the work queues (not those workers have taken); None when the broker cannot say."""
    try:
        with app.connection_for_read() as connection:
            return sum(int(connection.default_channel.queue_declare(queue=queue).message_count)
                       for queue in WORK_QUEUES)
    except Exception as exc:
        log.warning("could not read the broker's queue length (%s); the sweeper offers stale work again anyway",
                    type(exc).__name__)
        return None


@worker_init.connect
def _refuse_invalid_alert_configuration(**_: object) -> None:
    """A bad roster or alert template stops the worker when it starts, not at the first alert. (Celery logs and
    ignores exceptions from signal handlers; SystemExit is not one of them.)"""
    try:
        default_services()
    except (RosterError, TemplateError) as exc:
        raise SystemExit(f"admitflow worker cannot start: {exc}") from None


@app.task(name="admitflow.escalate_due")
def escalate_due_task() -> None:
    """Beat: lease the escalation timers that are due and hand each to a worker. A lost message costs one lease
    (two minutes), after which the next run takes the timer again."""
    with session_scope() as session:
        timer_ids = lease_due_timers(session, utcnow())
        liveness.record_run(session, liveness.ESCALATE, utcnow(), len(timer_ids))
    for timer_id in timer_ids:
        escalate_task.apply_async((timer_id,))


@app.task(name="admitflow.escalate", **DATABASE_RETRY)
def escalate_task(timer_id: int) -> None:
    with session_scope() as session:
        escalate(session, timer_id, default_services(), utcnow())

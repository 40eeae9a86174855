"""Handing committed work to whoever runs it: the Celery broker, or this process when there is none.

Called only after the transaction that wrote the rows has committed. Losing a dispatch costs time, not work:
the sweeper finds rows nobody picked up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from config.settings import Settings
from worker.delivery.outbox import CRM_KINDS, deliver
from worker.leads.processing import Outcome, process_submission, process_submissions
from worker.staff.services import Services
from worker.store.db import session_scope
from worker.store.models import OutboxKind, OutboxMessage

log = logging.getLogger(__name__)

# The names of the tasks in worker/tasks.py this sends by name (the names are stored in queued messages; keep them).
PROCESS_SUBMISSION = "admitflow.process_submission"
PROCESS_SUBMISSIONS = "admitflow.process_submissions"
DELIVER_OUTBOX = "admitflow.deliver_outbox"

# Submissions processed together in one transaction: a page of the Gravity Forms API.
BATCH_SIZE = 50

# A processed page with at most this many staff alerts texts staff from the task that processed it, right after
# the commit, sparing each text a trip through the broker and the pool; a larger page (a backfill) hands its
# alerts to the pool like the rest, so they go out side by side.
ALERTS_SENT_IN_PLACE = 10
# Alerts still to send after this long (a slow Twilio) go to the pool instead, well within the task's time limit.
IN_PLACE_SECONDS = 15.0


class Dispatcher(Protocol):
    def submission_stored(self, submission_id: int) -> None: ...

    def submissions_stored(self, submission_ids: list[int]) -> None: ...

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None: ...

    def crm_ready(self, outbox_ids: Iterable[int]) -> None:
        """Rows of `CRM_KINDS`: work that may wait behind other CRM work without delaying anyone's text."""


def _pages(submission_ids: list[int]) -> list[list[int]]:
    return [submission_ids[start:start + BATCH_SIZE] for start in range(0, len(submission_ids), BATCH_SIZE)]


def process_stored(submission_ids: list[int], settings: Settings) -> list[Outcome]:
    """Process submissions together, committed as one; if that fails for any reason but the database, each is
    processed alone, so one entry that cannot be processed holds up no other (it stays `received`, and the
    sweeper offers it again). A database error is raised: the caller retries the whole."""
    try:
        with session_scope() as session:
            return process_submissions(session, submission_ids, settings)
    except OperationalError:
        raise
    except Exception as exc:
        if len(submission_ids) == 1:
            raise
        log.warning("processing %d submissions together failed (%s); processing them one at a time",
                    len(submission_ids), type(exc).__name__)
    outcomes = []
    for submission_id in submission_ids:
        try:
            with session_scope() as session:
                outcomes.append(process_submission(session, submission_id, settings))
        except OperationalError:
            raise
        except Exception as exc:
            log.error("submission %s could not be processed (%s); it stays received and the sweeper offers it "
                      "again", submission_id, type(exc).__name__)
            outcomes.append(Outcome(None))
    return outcomes


def hand_on(outbox_ids: list[int], services: Services, dispatcher: Dispatcher) -> list[tuple[int, timedelta]]:
    """Pass a processed page's outbox rows on: the CRM work to `dispatcher`, then the staff alerts of a small page
    delivered here (the same leased, exactly-once `deliver`). Returns the alerts due again, and when. An alert
    that cannot be delivered here for a database error goes to `dispatcher` too; losing it costs time only, as the
    sweeper finds it."""
    if not outbox_ids:
        return []
    with session_scope() as session:
        kinds = {outbox_id: kind for outbox_id, kind in session.execute(
            select(OutboxMessage.id, OutboxMessage.kind).where(OutboxMessage.id.in_(outbox_ids)))}
    alerts = {outbox_id for outbox_id, kind in kinds.items() if kind == OutboxKind.STAFF_ALERT}
    if len(alerts) > ALERTS_SENT_IN_PLACE:
        alerts = set()
    dispatcher.outbox_ready(outbox_id for outbox_id in outbox_ids
                            if outbox_id not in alerts and kinds.get(outbox_id) not in CRM_KINDS)
    dispatcher.crm_ready(outbox_id for outbox_id in outbox_ids if kinds.get(outbox_id) in CRM_KINDS)
    due_again = []
    until = time.monotonic() + IN_PLACE_SECONDS
    for n, outbox_id in enumerate(sorted(alerts)):
        if time.monotonic() > until:
            dispatcher.outbox_ready(sorted(alerts)[n:])
            break
        try:
            with session_scope() as session:
                delivery = deliver(session, outbox_id, services)
        except OperationalError as exc:
            log.warning("staff alert %s could not be delivered in place (%s); handed to the pool", outbox_id,
                        type(exc).__name__)
            dispatcher.outbox_ready([outbox_id])
            continue
        if delivery.retry_in is not None:
            due_again.append((outbox_id, delivery.retry_in))
    return due_again


class CeleryDispatcher:
    """Sends task messages carrying ids only."""

    def submission_stored(self, submission_id: int) -> None:
        _send(PROCESS_SUBMISSION, submission_id)

    def submissions_stored(self, submission_ids: list[int]) -> None:
        for page in _pages(submission_ids):
            _send(PROCESS_SUBMISSIONS, page)

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None:
        for outbox_id in outbox_ids:
            _send(DELIVER_OUTBOX, outbox_id)

    def crm_ready(self, outbox_ids: Iterable[int]) -> None:
        from config.celery_app import CRM_QUEUE

        for outbox_id in outbox_ids:
            _send(DELIVER_OUTBOX, outbox_id, queue=CRM_QUEUE)


def _send(task_name: str, item: int | list[int], queue: str | None = None) -> None:
    from config.celery_app import app

    try:
        app.send_task(task_name, (item,), retry=True, retry_policy={"max_retries": 2}, queue=queue)
    except Exception as exc:
        log.warning("could not reach the broker (%s); the sweeper will pick up %s", type(exc).__name__,
                    f"items {item[0]}..{item[-1]}" if isinstance(item, list) else f"item {item}")


class InlineDispatcher:
    """Runs the work now, in this process: the embedded default with no broker."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def submission_stored(self, submission_id: int) -> None:
        self.submissions_stored([submission_id])

    def submissions_stored(self, submission_ids: list[int]) -> None:
        for page in _pages(submission_ids):
            for outcome in process_stored(page, self.services.settings):
                self.outbox_ready(outcome.outbox_ids)

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None:
        for outbox_id in outbox_ids:
            with session_scope() as session:
                # Without a broker nothing could come back for a row that waited for a batch: one at a time.
                deliver(session, outbox_id, self.services, batches=False)

    def crm_ready(self, outbox_ids: Iterable[int]) -> None:
        self.outbox_ready(outbox_ids)


def dispatcher_for(settings: Settings, services: Services) -> Dispatcher:
    return CeleryDispatcher() if settings.uses_broker else InlineDispatcher(services)

"""Handing committed work to whoever runs it: the Celery broker, or this process when there is none.

Called only after the transaction that wrote the rows has committed. Losing a dispatch costs time, not work:
the sweeper finds rows nobody picked up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from types import TracebackType
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from config.settings import Settings
from worker.delivery.outbox import CRM_KINDS, batch_crm_of, deliver, lingering
from worker.delivery.page_texts import PageTexts, side_by_side, text_page
from worker.leads.processing import Outcome, lock_page, process_submission, process_submissions
from worker.staff.services import Services
from worker.store.db import session_scope, utcnow
from worker.store.models import OutboxKind, OutboxMessage, Submission

log = logging.getLogger(__name__)

# The names of the tasks in worker/tasks.py this sends by name (the names are stored in queued messages; keep them).
PROCESS_SUBMISSION = "admitflow.process_submission"
PROCESS_SUBMISSIONS = "admitflow.process_submissions"
DELIVER_OUTBOX = "admitflow.deliver_outbox"
DELIVER_OUTBOX_ROWS = "admitflow.deliver_outbox_rows"

# Submissions processed together in one transaction: a page of the Gravity Forms API.
BATCH_SIZE = 50
# A history (a backfill, an imported file) is processed four API pages to a transaction. A page costs a dozen
# statements however many entries it holds, and at 50 entries that was about 40% of processing's CPU; at 200 a
# page's own work grows with its entries again (docs/benchmarks.md#backfill). Live pages stay small: their texts
# wait for the whole page.
HISTORY_PAGE_SIZE = 200

# A processed page's texts (staff alerts first, then acknowledgements) are sent by the task that processed it,
# right after the commit, sparing each a trip through the broker and the pool. A text is a fraction of a second
# of waiting on Twilio and a few milliseconds of work, so this many go out at once, each from a thread of its own:
# a page of fifty is texted in the time of five texts, not fifty, and a burst's backlog is not held to one text at
# a time per pool process.
TEXTS_SIDE_BY_SIDE = 10
# Texts not yet started after this long (a slow Twilio) go to the pool instead, well within the task's time limit.
IN_PLACE_SECONDS = 15.0
TEXT_KINDS = (OutboxKind.STAFF_ALERT, OutboxKind.PERSON_ACK)  # in the order they are sent


class Dispatcher(Protocol):
    def submission_stored(self, submission_id: int) -> None: ...

    def submissions_stored(self, submission_ids: list[int], *, page_size: int = BATCH_SIZE) -> None: ...

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None: ...

    def crm_ready(self, outbox_ids: Iterable[int], *, linger: float = 0.0) -> None:
        """Rows of `CRM_KINDS`: work that may wait behind other CRM work without delaying anyone's text. With
        `linger`, new CRM syncs for a CRM that takes batches: first offered that many seconds from now, once others
        have had time to join their batch (`worker/delivery/outbox.py`, `lingering`)."""


def pages(submission_ids: list[int], size: int = BATCH_SIZE) -> list[list[int]]:
    return [submission_ids[start:start + size] for start in range(0, len(submission_ids), size)]


class HistoryPages:
    """Gathers the ids of stored history, API page by API page, and hands them on `HISTORY_PAGE_SIZE` at a time.
    Leaving the block hands on what it holds, on an error's way out too: what was stored is processed."""

    def __init__(self, hand_on: Callable[[list[int]], None]) -> None:
        self.hand_on = hand_on
        self.held: list[int] = []

    @classmethod
    def to(cls, dispatcher: Dispatcher) -> HistoryPages:
        """Hand the pages to a dispatcher, which keeps each whole."""
        return cls(lambda ids: dispatcher.submissions_stored(ids, page_size=HISTORY_PAGE_SIZE))

    def __enter__(self) -> HistoryPages:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None or issubclass(kind, Exception):
            self.flush()

    def add(self, submission_ids: list[int]) -> None:
        self.held.extend(submission_ids)
        while len(self.held) >= HISTORY_PAGE_SIZE:
            page, self.held = self.held[:HISTORY_PAGE_SIZE], self.held[HISTORY_PAGE_SIZE:]
            self.hand_on(page)

    def flush(self) -> None:
        held, self.held = self.held, []
        if held:
            self.hand_on(held)


def process_stored(submission_ids: list[int], settings: Settings, *, take_waiting: bool = False) -> list[Outcome]:
    """Process submissions together, committed as one; if that fails for any reason but the database, each is
    processed alone, so one entry that cannot be processed holds up no other (it stays `received`, and the
    sweeper offers it again). A database error is raised: the caller retries the whole.

    With `take_waiting`, the page also takes other submissions waiting their turn (`lock_page`), up to a page,
    and the outcomes are of the page taken, not of `submission_ids`."""
    try:
        with session_scope() as session:
            if take_waiting:
                submission_ids = lock_page(session, submission_ids, BATCH_SIZE)
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
    """Pass a processed page's outbox rows on: the CRM work to `dispatcher`, then the page's texts delivered here
    (`send_texts`). Returns the texts due again, and when."""
    if not outbox_ids:
        return []
    with session_scope() as session:
        found = session.execute(
            select(OutboxMessage.id, OutboxMessage.kind, OutboxMessage.attempts, OutboxMessage.state,
                   OutboxMessage.created_at, Submission.site)
            .join(Submission, Submission.id == OutboxMessage.submission_id)
            .where(OutboxMessage.id.in_(outbox_ids))).all()
    kinds = {row.id: row.kind for row in found}
    # A new sync for a CRM that takes batches waits for company before it is taken: sent to wait in the broker
    # now, it is not taken only to be sent back to wait.
    now = utcnow()
    waits = {row.id: wait for row in found if batch_crm_of(row.kind, row.site, services) is not None
             and (wait := lingering(row.attempts, row.state, row.created_at, services.settings, now)) is not None}
    texts = sorted((outbox_id for outbox_id in outbox_ids if kinds.get(outbox_id) in TEXT_KINDS),
                   key=lambda outbox_id: (TEXT_KINDS.index(kinds[outbox_id]), outbox_id))
    dispatcher.outbox_ready(outbox_id for outbox_id in outbox_ids
                            if kinds.get(outbox_id) not in (*TEXT_KINDS, *CRM_KINDS))
    dispatcher.crm_ready(outbox_id for outbox_id in outbox_ids
                         if kinds.get(outbox_id) in CRM_KINDS and outbox_id not in waits)
    if waits:  # a page's rows were written together: they wait as long as the longest of them
        dispatcher.crm_ready(sorted(waits), linger=max(waits.values()).total_seconds())
    return send_texts(texts, services, dispatcher)


def send_texts(outbox_ids: list[int], services: Services, dispatcher: Dispatcher) -> list[tuple[int, timedelta]]:
    """Deliver these rows, up to `TEXTS_SIDE_BY_SIDE` at once: the plain staff alerts together (`text_page`), then
    the others in the order given (the same leased, exactly-once `deliver`, a session each). Returns the rows due
    again, and when. A row not started within `IN_PLACE_SECONDS`, or one the database failed, goes to `dispatcher`;
    losing it costs time only, as the sweeper finds it."""
    until = time.monotonic() + IN_PLACE_SECONDS
    try:
        with session_scope() as session:
            page = text_page(session, outbox_ids, services, utcnow(), senders=TEXTS_SIDE_BY_SIDE, until=until)
    except OperationalError as exc:
        # Before the texts: none of them was taken, and each is tried alone. After: the rows it took stay leased
        # until their lease runs out, and the sweeper offers them again; a text whose outcome was not recorded is
        # looked up at Twilio first.
        log.warning("a page of texts could not be delivered together (%s); each is tried alone", type(exc).__name__)
        page = PageTexts(left=list(outbox_ids))
    if page.late:
        dispatcher.outbox_ready(page.late)
    return page.due_again + _send_one_by_one(page.left, services, dispatcher, until)


def _send_one_by_one(outbox_ids: list[int], services: Services, dispatcher: Dispatcher,
                     until: float) -> list[tuple[int, timedelta]]:
    due_again: list[tuple[int, timedelta]] = []
    handed: list[int] = []

    def send(outbox_id: int) -> None:
        try:
            with session_scope() as session:
                delivery = deliver(session, outbox_id, services, batches=False)  # a text joins no CRM batch
        except OperationalError as exc:
            log.warning("text %s could not be delivered in place (%s); handed to the pool", outbox_id,
                        type(exc).__name__)
            handed.append(outbox_id)
            return
        if delivery.retry_in is not None:
            due_again.append((outbox_id, delivery.retry_in))

    handed += side_by_side(outbox_ids, send, TEXTS_SIDE_BY_SIDE, until)
    if handed:
        dispatcher.outbox_ready(sorted(handed))
    return due_again


class CeleryDispatcher:
    """Sends task messages carrying ids only."""

    def submission_stored(self, submission_id: int) -> None:
        _send(PROCESS_SUBMISSION, submission_id)

    def submissions_stored(self, submission_ids: list[int], *, page_size: int = BATCH_SIZE) -> None:
        for page in pages(submission_ids, page_size):
            _send(PROCESS_SUBMISSIONS, page)

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None:
        for outbox_id in outbox_ids:
            _send(DELIVER_OUTBOX, outbox_id)

    def crm_ready(self, outbox_ids: Iterable[int], *, linger: float = 0.0) -> None:
        from config.celery_app import CRM_QUEUE

        if linger:  # syncs waiting to share a batch: one message, whose first delivery takes the others along
            if waiting := list(outbox_ids):
                _send(DELIVER_OUTBOX_ROWS, waiting, queue=CRM_QUEUE, countdown=linger)
            return
        for outbox_id in outbox_ids:
            _send(DELIVER_OUTBOX, outbox_id, queue=CRM_QUEUE)


def _send(task_name: str, item: int | list[int], queue: str | None = None, countdown: float | None = None) -> None:
    from config.celery_app import app

    try:
        app.send_task(task_name, (item,), retry=True, retry_policy={"max_retries": 2}, queue=queue,
                      countdown=countdown)
    except Exception as exc:
        log.warning("could not reach the broker (%s); the sweeper will pick up %s", type(exc).__name__,
                    f"items {item[0]}..{item[-1]}" if isinstance(item, list) else f"item {item}")


class InlineDispatcher:
    """Runs the work now, in this process: the embedded default with no broker."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def submission_stored(self, submission_id: int) -> None:
        self.submissions_stored([submission_id])

    def submissions_stored(self, submission_ids: list[int], *, page_size: int = BATCH_SIZE) -> None:
        for page in pages(submission_ids, page_size):
            for outcome in process_stored(page, self.services.settings):
                self.outbox_ready(outcome.outbox_ids)

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None:
        for outbox_id in outbox_ids:
            with session_scope() as session:
                # Without a broker nothing could come back for a row that waited for a batch: one at a time.
                deliver(session, outbox_id, self.services, batches=False)

    def crm_ready(self, outbox_ids: Iterable[int], *, linger: float = 0.0) -> None:
        self.outbox_ready(outbox_ids)  # one at a time: nothing waits for a batch without a broker


def dispatcher_for(settings: Settings, services: Services) -> Dispatcher:
    return CeleryDispatcher() if settings.uses_broker else InlineDispatcher(services)

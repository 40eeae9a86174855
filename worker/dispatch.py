"""Handing committed work to whoever runs it: the Celery broker, or this process when there is none.

Called only after the transaction that wrote the rows has committed. Losing a dispatch costs time, not work:
the sweeper finds rows nobody picked up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from config.settings import Settings
from worker.db import session_scope
from worker.outbox import deliver
from worker.processing import process_submission
from worker.services import Services

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def submission_stored(self, submission_id: int) -> None: ...

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None: ...


class CeleryDispatcher:
    """Sends task messages carrying ids only."""

    def submission_stored(self, submission_id: int) -> None:
        from worker.tasks import process_submission_task

        _send(process_submission_task, submission_id)

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None:
        from worker.tasks import deliver_outbox_task

        for outbox_id in outbox_ids:
            _send(deliver_outbox_task, outbox_id)


def _send(task: object, item_id: int) -> None:
    try:
        task.apply_async((item_id,), retry=True, retry_policy={"max_retries": 2})  # type: ignore[attr-defined]
    except Exception as exc:
        log.warning("could not reach the broker (%s); the sweeper will pick up item %s", type(exc).__name__, item_id)


class InlineDispatcher:
    """Runs the work now, in this process: the embedded default with no broker."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def submission_stored(self, submission_id: int) -> None:
        with session_scope() as session:
            outcome = process_submission(session, submission_id, self.services.settings)
        self.outbox_ready(outcome.outbox_ids)

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None:
        for outbox_id in outbox_ids:
            with session_scope() as session:
                # Without a broker nothing could come back for a row that waited for a batch: one at a time.
                deliver(session, outbox_id, self.services, batches=False)


def dispatcher_for(settings: Settings, services: Services) -> Dispatcher:
    return CeleryDispatcher() if settings.uses_broker else InlineDispatcher(services)

"""What delivering a new lead costs the database, statement by statement (docs/benchmarks.md: the worker's CPU per
lead is mostly the work of building, sending and committing statements). Each step's id still goes out in a commit
before the next vendor call; the counts guard against a change that quietly adds round trips."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.worker.delivery.test_outbox import new_lead_outbox, services
from worker.delivery.outbox import deliver
from worker.store.db import session_scope, utcnow
from worker.store.models import OutboxKind, OutboxState


@contextmanager
def counted(session: Session) -> Iterator[dict[str, int]]:
    counts = {"statements": 0, "commits": 0}

    def statement(*_: Any) -> None:
        counts["statements"] += 1

    def commit(*_: Any) -> None:
        counts["commits"] += 1

    bind = session.get_bind()
    event.listen(bind, "before_cursor_execute", statement)
    event.listen(bind, "commit", commit)
    try:
        yield counts
    finally:
        event.remove(bind, "before_cursor_execute", statement)
        event.remove(bind, "commit", commit)


@pytest.mark.services
@pytest.mark.parametrize(("kind", "statements", "commits"), [
    # lease; contact mark; contact id with the note's mark; note id with the task's mark; task id and delivered
    (OutboxKind.CRM_SYNC, 16, 5),
    # lease; the attempt, before the text; its answer, the escalation timer and delivered (the time the person
    # asked to be called was read at processing: the form is not read again)
    (OutboxKind.STAFF_ALERT, 8, 3),
])
def test_delivering_a_new_lead_costs_a_fixed_number_of_round_trips(
    pg_settings: Settings, form_object: dict[str, Any], kind: OutboxKind, statements: int, commits: int
) -> None:
    with session_scope() as session:
        ids = new_lead_outbox(session, pg_settings, form_object)
        with counted(session) as counts:
            outcome = deliver(session, ids[kind], services(pg_settings), now=utcnow())

    assert outcome.state == OutboxState.DELIVERED
    assert counts == {"statements": statements, "commits": commits}

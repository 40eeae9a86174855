"""A real worker taking from its queues while a slow CRM's backlog waits: a new person's staff text goes out before
that backlog drains, not after it (config/celery_app.py QUEUES_BY_PRIORITY; the queues alone are tested in
tests/config/test_queue_priority.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from config.settings import Settings
from tests.conftest import make_entry
from tests.integration.crm_stack import crm_stack
from tests.support.processes import wait_for
from worker.store.db import session_scope
from worker.store.models import OutboxKind, OutboxMessage, OutboxState

pytestmark = pytest.mark.services

BACKLOG = 6  # people whose CRM syncs wait
HUBSPOT_ANSWER_SECONDS = 1.0  # each contact or task creation: two per lead, so the backlog takes at least 12 s
NAMES = ("Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper")


def person(number: int) -> dict[str, Any]:
    return make_entry(
        960 + number,
        **{"1.3": NAMES[number], "1.6": "Example", "2": f"{NAMES[number].lower()}.example@example.org",
           "3": f"(617) 555-01{20 + number}", "ip": f"192.0.2.{60 + number}"},
    )


def crm_syncs_waiting() -> int:
    with session_scope() as session:
        return int(session.scalar(
            select(func.count()).select_from(OutboxMessage)
            .where(OutboxMessage.kind == OutboxKind.CRM_SYNC, OutboxMessage.state != OutboxState.DELIVERED)
        ) or 0)


def test_a_new_persons_staff_text_goes_out_ahead_of_a_slow_crms_backlog(
    pg_settings: Settings, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One pool process, one lead per HubSpot call: the CRM's backlog is a queue of tasks the worker must get past.
    with crm_stack(pg_settings, redis_url, tmp_path, monkeypatch, concurrency=1,
                   HUBSPOT_BATCH_SIZE="0", CRM_BATCH_LINGER_SECONDS="0") as stack:
        state = stack.providers.state
        state.create_answer_delay = HUBSPOT_ANSWER_SECONDS
        for number in range(BACKLOG):
            assert stack.post(person(number)).status_code == 202
        wait_for(lambda: len(state.sms) == BACKLOG, timeout=60, what="the first people's staff texts")
        wait_for(lambda: len(state.contacts) >= 1, timeout=30, what="the worker to start on the CRM backlog")

        assert stack.post(person(BACKLOG)).status_code == 202
        wait_for(lambda: len(state.sms) == BACKLOG + 1, timeout=30, what="the new person's staff text")

        # The worker finished at most the sync it was running, and perhaps the next, before taking the new page.
        assert crm_syncs_waiting() >= BACKLOG - 2, "the new person's text waited for the CRM backlog to drain"
        assert NAMES[BACKLOG] not in " ".join(sms["Body"] for sms in state.sms), "no name in a staff text"
        wait_for(lambda: crm_syncs_waiting() == 0, timeout=90, what="the CRM backlog to drain")
        assert len(state.contacts) == BACKLOG + 1

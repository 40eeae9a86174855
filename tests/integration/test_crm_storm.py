"""A burst of submissions while the fake HubSpot answers a third of calls with 429 or 502: every lead must reach the
CRM exactly once, with exactly one callback task, within HubSpot's budget.

ADMITFLOW_STORM_SIZE sets the burst (default 200, so CI stays within minutes; the issue's figure is 1,000).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from config.settings import Settings
from tests.conftest import make_entry
from tests.integration.crm_stack import CrmStack, crm_stack
from tests.support.processes import wait_for
from worker.store.db import session_scope
from worker.store.models import Lead, OutboxMessage, OutboxState, Submission

pytestmark = pytest.mark.services

STORM_SIZE = int(os.environ.get("ADMITFLOW_STORM_SIZE", "200"))
BURST_PER_10_SECONDS = 400
SEARCHES_PER_SECOND = 30
CONCURRENCY = 8


def storm_entry(n: int) -> dict[str, object]:
    """Person n: the first hundred give only a phone (+1 617 555 01nn), the rest only an email. Each writes from
    their own browser, so no two are taken for one person correcting a typo."""
    contact = {"2": None, "3": f"(617) 555-01{n:02d}"} if n < 100 else {"2": f"storm.{n}@example.org", "3": None}
    return make_entry(90_000 + n, user_agent=f"Mozilla/5.0 (storm {n})", **contact)


def outbox_settled(expected_rows: int) -> bool:
    with session_scope() as session:
        received = session.scalar(select(func.count()).select_from(Submission).where(Submission.state == "received"))
        pending = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == OutboxState.PENDING)
        )
        total = session.scalar(select(func.count()).select_from(OutboxMessage))
    return received == 0 and pending == 0 and (total or 0) >= expected_rows


@pytest.mark.parametrize(("batched", "size"), [(True, STORM_SIZE), (False, min(STORM_SIZE, 60))],
                         ids=["batches", "one-lead-per-call"])
def test_a_storm_of_submissions_with_a_third_of_crm_calls_failing_puts_every_lead_in_hubspot_once(
    pg_settings: Settings, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batched: bool, size: int
) -> None:
    limits = {"HUBSPOT_CUSTOM_PROPERTIES": "true", "HUBSPOT_BATCH_SIZE": "100" if batched else "0",
              "HUBSPOT_REQUESTS_PER_10_SECONDS": str(BURST_PER_10_SECONDS),
              "HUBSPOT_SEARCHES_PER_SECOND": str(SEARCHES_PER_SECOND),
              # Random 502s are independent, so quick retries suit them; production starts at 5 s for outages.
              # Capped: a batch makes several calls an attempt, so at a third failing, a run of failed attempts
              # doubled the wait past a minute and the storm's time bound measured the backoff, not delivery.
              "ADMITFLOW_RETRY_FIRST_SECONDS": "0.25", "ADMITFLOW_RETRY_MAX_SECONDS": "4",
              # Staff texts are not under test here; at the toll-free rate they would hold workers for a minute.
              "TWILIO_SMS_PER_SECOND": "0"}
    with crm_stack(pg_settings, redis_url, tmp_path, monkeypatch, concurrency=CONCURRENCY, **limits) as stack:
        run_storm(stack, size)


def run_storm(stack: CrmStack, size: int) -> None:
    state = stack.providers.state
    state.failure_rate = 1 / 3
    # Every 429 pauses all workers for its Retry-After; at a sixth of all calls, HubSpot's usual second would make
    # the storm take minutes of pauses alone.
    state.retry_after = "0.2"
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = Counter(pool.map(lambda n: stack.post(storm_entry(n)).status_code, range(size)))
    assert statuses == {202: size}

    wait_for(lambda: outbox_settled(2 * size), timeout=60 + size * 1.2, what="the outbox to settle")
    elapsed = time.monotonic() - started

    with session_scope() as session:
        leads = session.scalars(select(Lead)).all()
        rows = Counter(session.scalars(select(OutboxMessage.state)).all())
        attempts = Counter(session.scalars(select(OutboxMessage.attempts)).all())
    assert len(leads) == size
    assert rows == {OutboxState.DELIVERED: 2 * size}, "every CRM sync and staff alert is delivered"

    contacts, tasks = state.contacts, state.tasks
    assert len(contacts) == size, "no lead is missing from HubSpot or in it twice"
    assert {lead.crm_contact_id for lead in leads} == set(contacts)
    tasks_per_contact = Counter(task["_contact"] for task in tasks.values())
    assert tasks_per_contact == dict.fromkeys(contacts, 1), "every contact has exactly one callback task"
    assert {lead.crm_task_id for lead in leads} == set(tasks)
    for lead in leads:
        assert tasks[lead.crm_task_id or ""]["properties"]["hs_task_subject"] == f"Callback {lead.ref}"
        assert tasks[lead.crm_task_id or ""]["_contact"] == lead.crm_contact_id
    assert len(state.notes) == size

    crm_calls = [call for call in state.calls if call.path.startswith("/crm/")]
    searches = [call for call in crm_calls if call.path.endswith("/search")]
    # The fake counts a call when it arrives, the limiter when it is sent: a window may see the calls in flight
    # at its edge on top of its budget.
    assert max(_per_window(crm_calls, 10).values()) <= BURST_PER_10_SECONDS + CONCURRENCY
    assert max(_per_window(searches, 1).values()) <= SEARCHES_PER_SECOND + CONCURRENCY
    print(  # the issue asks for this figure in the test output
        f"\nstorm of {size}: {len(crm_calls)} HubSpot requests, {len(crm_calls) / size:.2f} per lead "
        f"({len(searches) / size:.2f} searches); outbox attempts per row {dict(sorted(attempts.items()))}; "
        f"settled in {elapsed:.0f}s"
    )


def _per_window(calls: list, seconds: int) -> Counter[int]:  # type: ignore[type-arg]
    return Counter(int(call.at // seconds) for call in calls)

"""A worker killed (SIGKILL) after HubSpot created a record but before we committed its id: once its leases run out
and the sweeper hands the work to a restarted worker, HubSpot still holds one contact and one callback task."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, text

from config.settings import Settings
from tests.conftest import make_entry
from tests.integration.crm_stack import CrmStack, crm_stack
from tests.support.processes import wait_for
from worker.store.db import session_scope
from worker.store.models import Lead, OutboxKind, OutboxMessage, OutboxState

pytestmark = pytest.mark.services

HELD_ANSWER_SECONDS = 20.0


def kill_while_hubspot_answers_a_creation(stack: CrmStack) -> None:
    state = stack.providers.state
    assert state.created.wait(30), "the worker never asked HubSpot to create the record"
    stack.kill_worker()
    state.created.clear()


def let_the_leases_run_out_and_sweep(stack: CrmStack) -> None:
    """What minutes of waiting would do: the killed worker's outbox and lead leases lapse and the rows are overdue,
    then beat's sweep runs on the restarted worker."""
    with session_scope() as session:
        session.execute(text("UPDATE outbox SET leased_until = now() - interval '1 second', "
                             "next_attempt_at = next_attempt_at - interval '10 minutes' WHERE state = 'pending'"))
        session.execute(text("UPDATE leads SET crm_lease_until = now() - interval '1 second'"))
    subprocess.run([sys.executable, "-c", "from worker.tasks import sweep_task; sweep_task.apply_async()"],
                   env=stack.env, check=True, timeout=30)


def crm_sync_row() -> OutboxMessage:
    with session_scope() as session:
        row = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_SYNC)).one()
        session.expunge(row)
        return row


def test_a_worker_killed_between_hubspots_answer_and_our_commit_leaves_one_contact_and_one_task(
    pg_settings: Settings, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with crm_stack(pg_settings, redis_url, tmp_path, monkeypatch, concurrency=1) as stack:
        state = stack.providers.state
        state.create_answer_delay = HELD_ANSWER_SECONDS
        assert stack.post(make_entry(801, **{"3": None})).status_code == 202

        # 1. Killed while HubSpot's 201 for the new contact is on its way.
        kill_while_hubspot_answers_a_creation(stack)
        assert len(state.contacts) == 1
        with session_scope() as session:
            assert session.scalars(select(Lead)).one().crm_contact_id is None

        # 2. Restarted: it finds the contact by email, adds the note, and is killed again creating the task.
        stack.start_worker()
        let_the_leases_run_out_and_sweep(stack)
        kill_while_hubspot_answers_a_creation(stack)
        assert len(state.tasks) == 1
        with session_scope() as session:
            lead = session.scalars(select(Lead)).one()
            assert lead.crm_contact_id in state.contacts and lead.crm_task_id is None

        # 3. Restarted with HubSpot answering at once: it finds the task by its subject.
        state.create_answer_delay = 0.0
        stack.start_worker()
        let_the_leases_run_out_and_sweep(stack)
        wait_for(lambda: crm_sync_row().state == OutboxState.DELIVERED, timeout=60, what="the CRM sync")

        assert len(state.contacts) == 1, "no second contact"
        assert len(state.tasks) == 1, "no second callback task"
        assert len(state.notes) == 1, "no second note"
        with session_scope() as session:
            lead = session.scalars(select(Lead)).one()
        assert lead.crm_contact_id in state.contacts
        assert lead.crm_task_id in state.tasks
        creations = [call.path for call in state.calls if call.method == "POST" and not call.path.endswith("search")]
        assert creations.count("/crm/v3/objects/contacts") == 1, "the retry searched instead of creating"
        assert creations.count("/crm/v3/objects/tasks") == 1, "the retry searched instead of creating"


def test_a_worker_killed_inside_a_batch_leaves_each_lead_one_contact_one_note_and_one_task(
    pg_settings: Settings, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = {"HUBSPOT_CUSTOM_PROPERTIES": "true", "HUBSPOT_BATCH_SIZE": "100"}
    with crm_stack(pg_settings, redis_url, tmp_path, monkeypatch, concurrency=1, **batches) as stack:
        state = stack.providers.state
        state.create_answer_delay = HELD_ANSWER_SECONDS
        people = [make_entry(810 + n, **{"2": f"batch.crash.{n}@example.org", "3": None,
                                         "user_agent": f"Mozilla/5.0 (crash {n})"}) for n in range(3)]
        assert [stack.post(entry).status_code for entry in people] == [202, 202, 202]

        # 1. Killed while HubSpot's answer to the batch upsert of the three contacts is on its way.
        kill_while_hubspot_answers_a_creation(stack)
        assert len(state.contacts) == 3
        # 2. Restarted: the contacts are found by email, the notes added, and it is killed creating the tasks.
        stack.start_worker()
        let_the_leases_run_out_and_sweep(stack)
        kill_while_hubspot_answers_a_creation(stack)
        assert len(state.tasks) == 3
        # 3. Restarted with HubSpot answering at once: the tasks are found by their subjects.
        state.create_answer_delay = 0.0
        stack.start_worker()
        let_the_leases_run_out_and_sweep(stack)
        wait_for(lambda: all_crm_syncs_delivered(3), timeout=60, what="the CRM syncs")

        assert (len(state.contacts), len(state.notes), len(state.tasks)) == (3, 3, 3), "nothing created twice"
        with session_scope() as session:
            leads = session.scalars(select(Lead)).all()
        assert {lead.crm_contact_id for lead in leads} == set(state.contacts)
        assert {lead.crm_task_id for lead in leads} == set(state.tasks)
        creations = [call.path for call in state.calls if call.method == "POST"]
        assert creations.count("/crm/v3/objects/contacts/batch/upsert") == 1, "the retry read instead of upserting"
        assert creations.count("/crm/v3/objects/tasks/batch/create") == 1, "the retry searched instead of creating"


def all_crm_syncs_delivered(expected: int) -> bool:
    with session_scope() as session:
        states = session.scalars(select(OutboxMessage.state).where(OutboxMessage.kind == OutboxKind.CRM_SYNC)).all()
    return len(states) == expected and set(states) == {OutboxState.DELIVERED}

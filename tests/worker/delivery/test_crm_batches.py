"""CRM syncs delivered in batches: many waiting leads in one call per step, each lead's ids committed, and every way
a batch can go wrong (the whole call, one lead left out, one lead refused) ending with each lead in the CRM once."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import BatchResult, CallbackTaskSpec, ContactCard, LogOnlyCRM, NoteSpec
from integrations.errors import IntegrationError, InvalidRequest, ServiceUnavailable
from tests.conftest import make_entry
from tests.worker.delivery.test_delivery_statements import counted
from tests.worker.delivery.test_outbox import new_lead_outbox, services
from worker.delivery.dispatch import InlineDispatcher, send_texts
from worker.delivery.outbox import deliver
from worker.intake.entries import register_form, store_entry
from worker.leads.processing import process_submission
from worker.staff.services import build_services
from worker.store.db import session_scope, utcnow
from worker.store.models import Claim, Lead, OutboxKind, OutboxMessage, OutboxState, Submission, SubmissionSource


@dataclass
class BatchingCRM(LogOnlyCRM):
    """A CRM that takes batches and keeps what it holds; `fail` makes the next call of a step raise, `leave_out`
    and `refuse` make it leave a lead out of its answer (a 207) or refuse it for its data."""

    batch_size: int = 100
    calls: list[tuple[str, list[str], frozenset[str]]] = field(default_factory=list)
    contacts: dict[str, str] = field(default_factory=dict)  # lead ref -> contact id
    notes: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)
    fail: dict[str, IntegrationError] = field(default_factory=dict)
    leave_out: set[str] = field(default_factory=set)
    refuse: set[str] = field(default_factory=set)
    solo: list[str] = field(default_factory=list)
    found_unwritten: set[str] = field(default_factory=set)  # once: the contact is found, then its update fails
    known: list[dict[str, str | None]] = field(default_factory=list)  # the contact ids each contacts call was given
    answered_at: dict[str, datetime] = field(default_factory=dict)  # when each step's last call answered
    task_owners: dict[str, str | None] = field(default_factory=dict)  # lead ref -> the owner its task was given

    def _step(self, step: str, keys: list[str], look_first: Collection[str], store: dict[str, str]) -> BatchResult:
        self.calls.append((step, keys, frozenset(look_first)))
        if step in self.fail:
            raise self.fail.pop(step)
        result = BatchResult()
        for key in keys:
            if key in self.refuse:
                result.errors[key] = InvalidRequest("refused (VALIDATION_ERROR)")
            elif key in self.leave_out:
                result.errors[key] = ServiceUnavailable("left out; will retry")
            else:
                result.ids[key] = store.setdefault(key, f"{step}-{key}")
        self.answered_at[step] = utcnow()
        return result

    def upsert_contacts(self, contacts: Sequence[tuple[ContactCard, str | None]]) -> BatchResult:
        self.known.append({card.lead_ref: contact_id for card, contact_id in contacts})
        unwritten, self.found_unwritten = self.found_unwritten, set()
        result = self._step("contacts", [card.lead_ref for card, _ in contacts if card.lead_ref not in unwritten],
                            (), self.contacts)
        for ref in unwritten:
            result.errors[ref] = ServiceUnavailable("HubSpot failed with 502 on the update; will retry")
            result.found[ref] = f"existing-{ref}"
        return result

    def add_notes(self, notes: Sequence[NoteSpec], *, look_first: Collection[str] = ()) -> BatchResult:
        return self._step("notes", [note.key for note in notes], look_first, self.notes)

    def ensure_callback_tasks(
        self, tasks: Sequence[tuple[str, CallbackTaskSpec]], *, look_first: Collection[str] = ()
    ) -> BatchResult:
        self.task_owners.update((task.lead_ref, task.owner_id) for _, task in tasks)
        return self._step("tasks", [task.lead_ref for _, task in tasks], look_first, self.tasks)

    def upsert_contact(self, card: ContactCard, contact_id: str | None) -> str:
        self.solo.append(card.lead_ref)
        if card.lead_ref in self.refuse:
            raise InvalidRequest("HubSpot rejected hubspot_owner_id (400): fix owner ids in ROSTER_FILE")
        return self.contacts.setdefault(card.lead_ref, f"contacts-{card.lead_ref}")


def waiting_syncs(session: Session, settings: Settings, form_object: dict[str, Any], people: int) -> list[int]:
    """`people` different people submit; returns their CRM sync rows."""
    register_form(session, site=settings.site, form_object=form_object)
    for n in range(people):
        entry = make_entry(100 + n, **{"1.3": f"Person{chr(65 + n)}", "2": f"batch.{n}@example.org",
                                       "3": f"(617) 555-01{n:02d}", "user_agent": f"Mozilla/5.0 (batch {n})"})
        stored = store_entry(session, site=settings.site, entry=entry, source=SubmissionSource.CLI)
        session.commit()
        process_submission(session, stored.submission_id, settings)
        session.commit()
    return list(session.scalars(select(OutboxMessage.id).where(OutboxMessage.kind == OutboxKind.CRM_SYNC)
                                .order_by(OutboxMessage.id)))


def row_states(session: Session, rows: list[int]) -> dict[int, str]:
    return {row.id: row.state for row in session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(rows)))}


def later(seconds: float = 5) -> Any:
    return utcnow() + timedelta(seconds=seconds)


def test_one_delivery_carries_every_waiting_lead_in_one_call_per_step(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    rows = waiting_syncs(session, settings, form_object, 10)
    crm = BatchingCRM()

    delivery = deliver(session, rows[3], services(settings, crm=crm), now=later())

    assert delivery.state == OutboxState.DELIVERED and delivery.others_due == ()
    assert [(step, len(keys)) for step, keys, _ in crm.calls] == [("contacts", 10), ("notes", 10), ("tasks", 10)]
    assert set(session.scalars(select(OutboxMessage.state).where(OutboxMessage.id.in_(rows)))) == {"delivered"}
    leads = session.scalars(select(Lead)).all()
    assert {lead.crm_contact_id for lead in leads} == {f"contacts-{lead.ref}" for lead in leads}
    assert {lead.crm_task_id for lead in leads} == {f"tasks-{lead.ref}" for lead in leads}
    assert all(lead.crm_lease_until is None for lead in leads)
    assert None not in set(session.scalars(select(Submission.crm_note_id)))


def test_without_a_crm_configured_the_worker_logs_waiting_leads_in_one_batch(
    session: Session, settings: Settings, form_object: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    rows = waiting_syncs(session, settings, form_object, 4)
    log_only = build_services(settings)  # no HubSpot token, no Salesforce credentials

    with caplog.at_level(logging.INFO, logger="integrations.crm"):
        delivery = deliver(session, rows[2], log_only, now=later())

    assert delivery.state == OutboxState.DELIVERED and delivery.others_due == ()
    assert set(session.scalars(select(OutboxMessage.state).where(OutboxMessage.id.in_(rows)))) == {"delivered"}
    leads = session.scalars(select(Lead)).all()
    assert {lead.crm_task_id for lead in leads} == {f"log-task-{lead.ref}" for lead in leads}
    assert caplog.text.count("would upsert the contact for lead") == 4
    assert caplog.text.count("would create task") == 4


def test_the_message_of_a_sync_a_batch_carried_ends_after_one_read(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    rows = waiting_syncs(session, settings, form_object, 3)
    on_batching_crm = services(settings, crm=BatchingCRM())
    deliver(session, rows[0], on_batching_crm, now=later())

    with counted(session) as counts:  # the broker still brings each carried row's own message
        outcomes = [deliver(session, row, on_batching_crm, now=later()) for row in rows[1:]]

    assert [outcome.state for outcome in outcomes] == [None, None]
    assert counts == {"statements": 2, "commits": 0}, "one read each, no lease tried"


def test_a_new_sync_waits_for_company_before_it_is_leased(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    [row] = waiting_syncs(session, settings, form_object, 1)
    crm = BatchingCRM()

    delivery = deliver(session, row, services(settings, crm=crm), now=utcnow())

    assert delivery.state is None and delivery.retry_in is not None
    assert timedelta(seconds=1) < delivery.retry_in <= timedelta(seconds=settings.crm_batch_linger_seconds)
    assert crm.calls == [] and session.get_one(OutboxMessage, row).attempts == 0


def test_after_a_failed_notes_call_the_retry_looks_for_the_notes_before_creating_them(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    rows = waiting_syncs(session, settings, form_object, 3)
    crm = BatchingCRM(fail={"notes": ServiceUnavailable("HubSpot failed with 502; will retry")})

    first = deliver(session, rows[0], services(settings, crm=crm), now=later())

    assert first.state == OutboxState.PENDING and first.retry_in is not None
    assert sorted(outbox_id for outbox_id, _ in first.others_due) == rows[1:]
    assert all(lead.crm_contact_id for lead in session.scalars(select(Lead)))  # committed before the notes call

    second = deliver(session, rows[0], services(settings, crm=crm), now=later(60))

    assert second.state == OutboxState.DELIVERED
    notes_retry = [looked for step, _, looked in crm.calls if step == "notes"][-1]
    assert notes_retry == {f"note-{sub_id}" for sub_id in session.scalars(select(Submission.id))}
    assert len(crm.contacts) == len(crm.notes) == len(crm.tasks) == 3


def test_a_contact_found_but_not_written_is_kept_and_the_retry_writes_to_it_without_looking_again(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    rows = waiting_syncs(session, settings, form_object, 2)
    lead = session.scalars(select(Lead).order_by(Lead.id)).first()
    assert lead is not None
    crm = BatchingCRM(found_unwritten={lead.ref})

    deliver(session, rows[0], services(settings, crm=crm), now=later())

    assert row_states(session, rows) == {rows[0]: "pending", rows[1]: "delivered"}
    session.refresh(lead)
    assert lead.crm_contact_id == f"existing-{lead.ref}"

    assert deliver(session, rows[0], services(settings, crm=crm), now=later(60)).state == OutboxState.DELIVERED
    assert crm.known[-1] == {lead.ref: f"existing-{lead.ref}"}, "the retry updates the contact found, no new look"


def test_in_a_batch_a_lead_claimed_before_its_task_exists_gets_it_owned_by_the_claimer(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    rows = waiting_syncs(session, settings, form_object, 3)
    claimed, *others = session.scalars(select(Lead).order_by(Lead.id)).all()
    session.add(Claim(lead_id=claimed.id, staff_id="s2", staff_name="Second Example", staff_phone="+16175550102",
                      crm_owner_id="owner-77", channel="sms", submitted_at=utcnow(), claimed_at=utcnow()))
    session.commit()
    crm = BatchingCRM()

    deliver(session, rows[0], services(settings, crm=crm), now=later())

    on_call = services(settings, crm=crm).roster.on_call_staff(later())[0].crm_owner_id
    assert crm.task_owners == {claimed.ref: "owner-77", **{lead.ref: on_call for lead in others}}


def test_a_lead_left_out_of_the_answer_is_retried_while_the_others_are_done(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    rows = waiting_syncs(session, settings, form_object, 3)
    missing = session.scalars(select(Lead).order_by(Lead.id)).all()[2].ref
    crm = BatchingCRM(leave_out={missing})

    delivery = deliver(session, rows[0], services(settings, crm=crm), now=later())

    states = row_states(session, rows)
    assert states == {rows[0]: "delivered", rows[1]: "delivered", rows[2]: "pending"}
    assert [outbox_id for outbox_id, _ in delivery.others_due] == [rows[2]]
    assert "left out" in (session.get_one(OutboxMessage, rows[2]).last_error or "")


def test_a_note_left_out_of_the_answer_is_in_doubt_from_when_the_call_ended(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    rows = waiting_syncs(session, settings, form_object, 2)
    missing = f"note-{session.get_one(OutboxMessage, rows[1]).submission_id}"
    crm = BatchingCRM(leave_out={missing})

    deliver(session, rows[0], services(settings, crm=crm), now=later())

    row = session.get_one(OutboxMessage, rows[1], populate_existing=True)
    assert row.unanswered == "note" and row.unanswered_at is not None
    assert row.unanswered_at >= crm.answered_at["notes"], "written, if at all, before the call ended"


def test_a_lead_the_crm_refuses_is_tried_alone_and_parked_with_the_fix_while_the_rest_go_through(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    rows = waiting_syncs(session, settings, form_object, 3)
    bad = session.scalars(select(Lead).order_by(Lead.id)).all()[1].ref
    crm = BatchingCRM(refuse={bad})

    deliver(session, rows[0], services(settings, crm=crm), now=later())

    states = row_states(session, rows)
    assert states == {rows[0]: "delivered", rows[1]: "dead", rows[2]: "delivered"}
    assert crm.solo == [bad]
    assert "ROSTER_FILE" in (session.get_one(OutboxMessage, rows[1]).last_error or "")


def test_a_whole_batch_refused_for_its_data_is_redone_lead_by_lead(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    rows = waiting_syncs(session, settings, form_object, 3)
    crm = BatchingCRM(fail={"contacts": InvalidRequest("HubSpot refused a batch (400 VALIDATION_ERROR)")})

    deliver(session, rows[0], services(settings, crm=crm), now=later())

    assert len(crm.solo) == 3
    assert set(session.scalars(select(OutboxMessage.state).where(OutboxMessage.id.in_(rows)))) == {"delivered"}
    assert len(crm.tasks) == 0 and all(lead.crm_task_id for lead in session.scalars(select(Lead)))


@pytest.mark.parametrize("batch_size", [0, 1])
def test_a_crm_that_does_not_batch_delivers_each_row_on_its_own(
    session: Session, settings: Settings, form_object: dict[str, Any], batch_size: int
) -> None:
    rows = waiting_syncs(session, settings, form_object, 2)
    crm = BatchingCRM(batch_size=batch_size)

    delivery = deliver(session, rows[0], services(settings, crm=crm), now=utcnow())

    assert delivery.state == OutboxState.DELIVERED and crm.calls == []
    assert session.get_one(OutboxMessage, rows[1]).state == OutboxState.PENDING


def test_without_a_broker_rows_are_delivered_at_once_even_for_a_batching_crm(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    rows = waiting_syncs(session, settings, form_object, 2)
    crm = BatchingCRM()

    InlineDispatcher(replace(services(settings), crm=crm)).outbox_ready(rows)

    assert crm.calls == [] and len(crm.solo) == 2
    assert set(session.scalars(select(OutboxMessage.state).where(OutboxMessage.id.in_(rows)))) == {"delivered"}


@pytest.mark.services
def test_a_text_sent_in_place_reads_nothing_about_crm_batches(pg_settings: Settings, form_object: dict[str, Any]
                                                              ) -> None:
    on_batching_crm = services(pg_settings, crm=BatchingCRM())
    with session_scope() as session:
        ids = new_lead_outbox(session, pg_settings, form_object)
        with counted(session) as counts:
            due_again = send_texts([ids[OutboxKind.STAFF_ALERT]], on_batching_crm, InlineDispatcher(on_batching_crm))
        state = session.get_one(OutboxMessage, ids[OutboxKind.STAFF_ALERT], populate_existing=True).state

    assert due_again == [] and state == OutboxState.DELIVERED
    assert counts == {"statements": 6, "commits": 2}, "the staff text's own statements only"


@pytest.mark.services
@pytest.mark.parametrize("people", [3, 6])
def test_a_batch_costs_as_many_statements_and_commits_whatever_its_size(
    pg_settings: Settings, form_object: dict[str, Any], people: int
) -> None:
    with session_scope() as session:
        rows = waiting_syncs(session, pg_settings, form_object, people)
        with counted(session) as counts:
            delivery = deliver(session, rows[0], services(pg_settings, crm=BatchingCRM()), now=later())
        states = set(row_states(session, rows).values())

    assert delivery.state == OutboxState.DELIVERED and states == {OutboxState.DELIVERED}
    # Each step's mark and ids are committed before the next call (what the fault runs rely on), once per batch;
    # the leads' earlier doubts and claims are read for the whole batch at once.
    assert counts == {"statements": 24, "commits": 11}

"""`admitflow leads merge` and `leads split` end to end over real HTTP: the leads synced to a loopback HubSpot or
Salesforce first (tests/fakes/providers.py, tests/fakes/salesforce_loopback.py), staff texted through a loopback
Twilio, then the command, whose CRM correction the embedded dispatcher delivers; the CRM records are what is
checked, and that staff hear nothing more."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import worker.cli.leads
from config.settings import Settings
from integrations.crm import CRM
from integrations.hubspot.client import HubSpotCRM
from integrations.salesforce import SalesforceCRM
from integrations.twilio.client import TwilioMessenger
from tests.fakes.admissions import EXAMPLE_ROSTER, next_weekday_morning, twilio_settings
from tests.fakes.salesforce_loopback import FakeSalesforce, LoopbackToken
from tests.fakes.storms import StormyProviders
from tests.fakes.twilio import CENTER_NUMBER
from tests.worker.trust.test_corrections import FIRST, LATER, submit
from worker.cli import main
from worker.delivery.outbox import deliver
from worker.intake.entries import register_form
from worker.staff.roster import load_roster
from worker.staff.services import Services
from worker.store.models import AuditEvent, CrmCorrection, Lead, OutboxKind, OutboxMessage, OutboxState, Submission

TIMEOUT = 0.5  # the CRM clients' timeout here: a held answer is lost after it


@pytest.fixture
def providers() -> Iterator[StormyProviders]:
    """HubSpot and Twilio on loopback; the storm holds no answer unless a test scripts one."""
    with StormyProviders() as fake:
        fake.storm.hold_seconds = TIMEOUT * 3
        yield fake


@pytest.fixture
def salesforce() -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as fake:
        yield fake


@pytest.fixture
def on_hubspot(settings: Settings, providers: StormyProviders) -> Services:
    """The services with HubSpot as the CRM (no custom properties, so single calls and search, as by default)."""
    return wired(settings, providers, HubSpotCRM("pat-na1-test", base_url=providers.url, timeout=TIMEOUT,
                                                 search_lag_seconds=0.0))


@pytest.fixture
def on_salesforce(settings: Settings, providers: StormyProviders, salesforce: FakeSalesforce) -> Services:
    return wired(settings, providers, SalesforceCRM(LoopbackToken(salesforce), timeout=TIMEOUT))


def wired(settings: Settings, providers: StormyProviders, crm: CRM) -> Services:
    messenger = TwilioMessenger("AC" + "0" * 32, "test-auth-token", CENTER_NUMBER, api_base_url=providers.url,
                                timeout=TIMEOUT)
    return Services(twilio_settings(settings), crm, messenger, load_roster(EXAMPLE_ROSTER))


Leads = Callable[..., str]


@pytest.fixture
def leads(monkeypatch: pytest.MonkeyPatch) -> Leads:
    """`admitflow leads ...` with the embedded dispatcher (no broker) delivering through the given services."""
    def run(services: Services, *args: str) -> str:
        monkeypatch.setattr(worker.cli.leads, "default_services", lambda: services)
        result = CliRunner().invoke(main, ["leads", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output
    return run


def deliver_everything(session: Session, services: Services, now: datetime) -> None:
    """Deliver the pending outbox rows as the worker would: staff alerts, acknowledgements, CRM syncs."""
    for _ in range(3):
        for outbox_id in session.scalars(select(OutboxMessage.id).where(
                OutboxMessage.state == OutboxState.PENDING).order_by(OutboxMessage.id)).all():
            deliver(session, outbox_id, services, now=now, batches=False)


def texts(providers: StormyProviders) -> int:
    return len(providers.state.sms)


def two_synced_leads(session: Session, settings: Settings, form_object: dict[str, Any],
                     services: Services) -> tuple[Lead, Lead]:
    """One person as two leads (test_corrections.FIRST and LATER), each in the CRM with its note and callback task,
    staff texted about each."""
    register_form(session, site=settings.site, form_object=form_object)
    keep, other = submit(session, settings, 1, FIRST).lead, submit(session, settings, 2, LATER).lead
    assert keep is not None and other is not None and keep.id != other.id
    deliver_everything(session, services, next_weekday_morning())
    for lead in (keep, other):
        session.refresh(lead)
        assert lead.crm_contact_id and lead.crm_task_id
    assert session.scalar(select(func.count()).select_from(OutboxMessage).where(
        OutboxMessage.state != OutboxState.DELIVERED)) == 0
    return keep, other


def correction_outcomes(session: Session) -> list[str]:
    return [outcome or "" for outcome in session.scalars(select(CrmCorrection.outcome).order_by(CrmCorrection.id))]


def test_merging_two_leads_merges_their_hubspot_contacts_and_their_notes_and_task_follow(
    session: Session, settings: Settings, form_object: dict[str, Any], providers: StormyProviders,
    on_hubspot: Services, leads: Leads,
) -> None:
    keep, other = two_synced_leads(session, settings, form_object, on_hubspot)
    state = providers.state
    assert (len(state.contacts), len(state.notes), len(state.tasks)) == (2, 2, 2)
    kept_task, dropped_task = keep.crm_task_id or "", other.crm_task_id
    sent = texts(providers)

    said = leads(on_hubspot, "merge", keep.ref, other.ref)

    assert f"{other.ref} merged into {keep.ref}" in said
    session.refresh(keep)
    session.refresh(other)
    [merged] = state.contacts
    assert keep.crm_contact_id == merged, "the lead follows HubSpot's new id for the merged contact"
    assert [note["_contact"] for note in state.notes.values()] == [merged, merged], "both requests' notes"
    assert list(state.tasks) == [kept_task] and state.tasks[kept_task]["_contact"] == merged
    assert state.archived["tasks"] == [dropped_task], "the second callback task is archived, not left open"
    assert other.crm_task_id is None
    assert correction_outcomes(session) == [f"HubSpot record {other.crm_contact_id} ({other.ref}) merged into "
                                            f"{merged} ({keep.ref})"]
    assert texts(providers) == sent, "staff are not texted about the merge"
    assert state.refused == []

    calls = len(state.calls)
    again = leads(on_hubspot, "merge", keep.ref, other.ref)

    assert "nothing changed" in again
    assert len(state.calls) == calls, "a repeated merge asks nothing of HubSpot or Twilio"
    assert len(correction_outcomes(session)) == 1


def test_a_hubspot_merge_whose_answer_was_lost_is_found_done_on_the_retry_and_not_merged_twice(
    session: Session, settings: Settings, form_object: dict[str, Any], providers: StormyProviders,
    on_hubspot: Services, leads: Leads,
) -> None:
    keep, other = two_synced_leads(session, settings, form_object, on_hubspot)
    state = providers.state
    providers.storm.script = [("POST /crm/v3/objects/contacts/merge", "late")]  # merged; the answer comes too late
    sent = texts(providers)

    leads(on_hubspot, "merge", keep.ref, other.ref)

    row = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_CORRECT)).one()
    assert row.state == OutboxState.PENDING and len(state.contacts) == 1
    [merged] = state.contacts
    later = next_weekday_morning()
    assert deliver(session, row.id, on_hubspot, now=later, batches=False).state == OutboxState.DELIVERED

    session.refresh(keep)
    assert keep.crm_contact_id == merged
    assert list(state.contacts) == [merged], "the retry merged nothing more"
    merges = [call for call in state.calls if call.path == "/crm/v3/objects/contacts/merge"]
    assert len(merges) == 2  # the lost one, and the retry HubSpot refused as done already
    assert len(state.tasks) == 1 and texts(providers) == sent
    assert correction_outcomes(session)[0].endswith(f"merged into {merged} ({keep.ref})")
    assert state.refused == []


def test_merging_two_leads_moves_the_salesforce_tasks_to_the_surviving_lead_and_tells_a_person_to_merge_the_leads(
    session: Session, settings: Settings, form_object: dict[str, Any], providers: StormyProviders,
    salesforce: FakeSalesforce, on_salesforce: Services, leads: Leads,
) -> None:
    keep, other = two_synced_leads(session, settings, form_object, on_salesforce)
    state = salesforce.state
    kept_lead, emptied_lead = keep.crm_contact_id or "", other.crm_contact_id or ""
    assert set(state.leads) == {kept_lead, emptied_lead} and len(state.tasks) == 4
    [other_note] = [key for key in state.tasks_on(emptied_lead) if key != other.crm_task_id]
    dropped_task = other.crm_task_id
    sent = texts(providers)

    leads(on_salesforce, "merge", keep.ref, other.ref)

    session.refresh(keep)
    notes = {each.crm_note_id for each in keep.submissions}
    assert other_note in notes and len(notes) == 2
    assert set(state.tasks_on(kept_lead)) == {keep.crm_task_id, *notes}, "both notes and one callback task"
    assert state.tasks_on(emptied_lead) == {}
    assert state.deleted_tasks == [dropped_task]
    assert set(state.leads) == {kept_lead, emptied_lead}, "Salesforce's REST API cannot merge Leads"
    told = session.scalars(select(AuditEvent.detail).where(AuditEvent.actor == "crm_correct")).one()
    assert f"merge Salesforce Lead {emptied_lead} into Lead {kept_lead}" in (told or "")
    assert keep.crm_contact_id == kept_lead
    assert texts(providers) == sent

    calls = len(state.calls)
    assert "nothing changed" in leads(on_salesforce, "merge", keep.ref, other.ref)
    assert len(state.calls) == calls and texts(providers) == sent


def test_a_salesforce_task_move_whose_answer_was_lost_is_finished_on_the_retry(
    session: Session, settings: Settings, form_object: dict[str, Any], providers: StormyProviders,
    salesforce: FakeSalesforce, on_salesforce: Services, leads: Leads,
) -> None:
    keep, other = two_synced_leads(session, settings, form_object, on_salesforce)
    state = salesforce.state
    state.lose_answers = [r"PATCH /services/data/v60\.0/sobjects/Task/00T\w+"]  # the first task moved, unanswered
    dropped_task = other.crm_task_id
    sent = texts(providers)

    leads(on_salesforce, "merge", keep.ref, other.ref)

    row = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_CORRECT)).one()
    assert row.state == OutboxState.PENDING
    assert deliver(session, row.id, on_salesforce, now=next_weekday_morning(), batches=False).state == (
        OutboxState.DELIVERED)
    assert len(state.tasks_on(keep.crm_contact_id or "")) == 3 and len(state.tasks) == 3
    assert state.tasks_on(other.crm_contact_id or "") == {}
    assert state.deleted_tasks == [dropped_task], "deleted once; the retry found it gone"
    assert "merge Salesforce Lead" in correction_outcomes(session)[0]
    assert texts(providers) == sent


@pytest.fixture
def joined_in_crm(session: Session, settings: Settings, form_object: dict[str, Any]) -> tuple[Lead, Submission]:
    """A lead dedup made of two requests on one phone and inbox, Jordan's and (an operator finds) Jordna's; not
    yet in the CRM. Returns the lead and Jordna's request."""
    register_form(session, site=settings.site, form_object=form_object)
    first = submit(session, settings, 1, {})
    second = submit(session, settings, 2, {"1.3": "Jordna", "date_created": "2026-11-20 18:00:00"})
    assert first.lead is not None and first.lead_id == second.lead_id
    return first.lead, second


def test_splitting_a_request_off_moves_its_note_to_a_hubspot_contact_of_its_own(
    session: Session, settings: Settings, providers: StormyProviders, joined_in_crm: tuple[Lead, Submission],
    on_hubspot: Services, leads: Leads,
) -> None:
    lead, moved = joined_in_crm
    deliver_everything(session, on_hubspot, next_weekday_morning())
    state = providers.state
    session.refresh(moved)
    moved_note = moved.crm_note_id
    assert (len(state.contacts), len(state.notes), len(state.tasks)) == (1, 2, 1) and moved_note
    first_contact = lead.crm_contact_id
    sent = texts(providers)

    said = leads(on_hubspot, "split", lead.ref, "--submission", str(moved.id))

    session.refresh(moved)
    split = moved.lead
    assert split is not None and split.ref in said
    assert split.crm_contact_id and split.crm_contact_id != first_contact
    assert state.archived["notes"] == [moved_note], "the request's note left the first person's contact"
    assert moved.crm_note_id in state.notes and state.notes[moved.crm_note_id]["_contact"] == split.crm_contact_id
    assert [note["_contact"] for key, note in state.notes.items() if key != moved.crm_note_id] == [first_contact]
    assert {task["_contact"] for task in state.tasks.values()} == {first_contact, split.crm_contact_id}
    assert split.crm_task_id in state.tasks, "the person split off has a callback task of their own"
    assert texts(providers) == sent, "staff are not texted: the person was called about already"
    assert state.refused == []

    calls = len(state.calls)
    assert "nothing changed" in leads(on_hubspot, "split", lead.ref, "--submission", str(moved.id))
    assert len(state.calls) == calls


def test_splitting_a_request_off_moves_its_note_to_a_salesforce_lead_of_its_own(
    session: Session, settings: Settings, providers: StormyProviders, salesforce: FakeSalesforce,
    joined_in_crm: tuple[Lead, Submission], on_salesforce: Services, leads: Leads,
) -> None:
    lead, moved = joined_in_crm
    deliver_everything(session, on_salesforce, next_weekday_morning())
    state = salesforce.state
    session.refresh(moved)
    moved_note, first_lead = moved.crm_note_id, lead.crm_contact_id or ""
    assert len(state.leads) == 1 and len(state.tasks_on(first_lead)) == 3 and moved_note
    sent = texts(providers)

    leads(on_salesforce, "split", lead.ref, "--submission", str(moved.id))

    session.refresh(moved)
    split = moved.lead
    assert split is not None and split.crm_contact_id and split.crm_contact_id != first_lead
    assert state.deleted_tasks == [moved_note]
    assert state.leads[split.crm_contact_id]["FirstName"] == "Jordna"
    assert set(state.tasks_on(split.crm_contact_id)) == {moved.crm_note_id, split.crm_task_id}
    assert set(state.tasks_on(first_lead)) == {lead.crm_task_id, *(
        each.crm_note_id for each in lead.submissions if each.id != moved.id)}
    assert texts(providers) == sent

    calls = len(state.calls)
    assert "nothing changed" in leads(on_salesforce, "split", lead.ref, "--submission", str(moved.id))
    assert len(state.calls) == calls

"""Merging and splitting leads by hand: the leads, the CRM calls (HubSpot and Salesforce mocked with `responses`;
test_corrections_loopback.py runs the commands over HTTP against loopback fakes), staff."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import responses
from responses import matchers
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import CRM
from integrations.hubspot.client import HubSpotCRM
from integrations.salesforce import ClientCredentialsFlow, SalesforceCRM
from tests.conftest import make_entry
from tests.fakes.admissions import alert_services
from worker.delivery.outbox import deliver
from worker.intake.entries import register_form, store_entry
from worker.leads.dedup import lead_first_names
from worker.leads.processing import process_submission
from worker.store.models import (
    AuditEvent,
    CrmCorrection,
    Lead,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    Submission,
    SubmissionSource,
)
from worker.trust.corrections import CorrectionError, merge_by_hand, split_by_hand

HUBSPOT = "https://api.hubapi.com/crm/v3/objects"
TOKEN = "pat-na1-00000000-test"
SF_LOGIN = "https://admitflow-test.my.salesforce.com"
SF_DATA = "https://admitflow-test-instance.my.salesforce.com/services/data/v60.0"
# Two requests of one person that share nothing dedup could link: a new phone, address and device days later.
FIRST = {"1.3": "Quincy", "1.6": "Marlowe", "2": "quincy.m@example.org", "3": "(617) 555-0131"}
LATER = {"1.3": "Quincy", "1.6": "Marlowe", "2": "q.marlowe@example.org", "3": "(212) 555-0177", "ip": "203.0.113.9",
         "date_created": "2026-11-24 09:00:00"}


def submit(session: Session, settings: Settings, entry_id: int, fields: dict[str, Any]) -> Submission:
    stored = store_entry(session, site=settings.site, entry=make_entry(entry_id, **fields), source=SubmissionSource.CLI)
    session.commit()
    process_submission(session, stored.submission_id, settings)
    session.commit()
    return session.get_one(Submission, stored.submission_id)


@pytest.fixture
def two_leads(session: Session, settings: Settings, form_object: dict[str, Any]) -> tuple[Lead, Lead]:
    """One person as two leads, each already in the CRM with a contact and a callback task."""
    register_form(session, site=settings.site, form_object=form_object)
    keep, other = submit(session, settings, 1, FIRST).lead, submit(session, settings, 2, LATER).lead
    assert keep is not None and other is not None and keep.id != other.id
    keep.crm_contact_id, keep.crm_task_id = "501", "9001"
    other.crm_contact_id, other.crm_task_id = "502", "9002"
    session.commit()
    return keep, other


def count(session: Session, kind: OutboxKind) -> int:
    return session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.kind == kind)) or 0


def correct_row(session: Session) -> OutboxMessage:
    return session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_CORRECT)).one()


def test_merging_by_hand_moves_the_requests_audits_and_texts_no_one(
    session: Session, two_leads: tuple[Lead, Lead]
) -> None:
    keep, other = two_leads
    alerts_before = count(session, OutboxKind.STAFF_ALERT)

    done = merge_by_hand(session, keep.ref, other.ref.lower())
    session.commit()

    assert other.status == LeadStatus.MERGED and other.merged_into_id == keep.id
    assert len(keep.submissions) == 2 and keep.repeat_count == 1
    assert count(session, OutboxKind.STAFF_ALERT) == alerts_before  # no new alert
    assert session.scalars(select(OutboxMessage.state).where(OutboxMessage.kind == OutboxKind.STAFF_ALERT,
                                                             OutboxMessage.lead_id == keep.id)).all() != []
    assert done.outbox_ids == [correct_row(session).id]
    details = session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "change")).all()
    assert details and all(f"merged {other.ref} into {keep.ref} by hand" in detail for detail in details)


def test_the_merged_leads_unsent_staff_alert_is_dropped(session: Session, two_leads: tuple[Lead, Lead]) -> None:
    keep, other = two_leads

    merge_by_hand(session, keep.ref, other.ref)
    session.commit()

    states = session.scalars(select(OutboxMessage.state).where(OutboxMessage.kind == OutboxKind.STAFF_ALERT)).all()
    assert sorted(states) == [OutboxState.DROPPED, OutboxState.PENDING]  # the survivor's own alert stands


def test_merging_again_changes_nothing(session: Session, two_leads: tuple[Lead, Lead]) -> None:
    keep, other = two_leads
    merge_by_hand(session, keep.ref, other.ref)
    session.commit()
    rows = session.scalar(select(func.count()).select_from(OutboxMessage))

    again = merge_by_hand(session, keep.ref, other.ref)
    session.commit()

    assert not again.changed and again.outbox_ids == []
    assert "already" in again.summary
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == rows
    with pytest.raises(CorrectionError, match="merged into another lead"):
        merge_by_hand(session, other.ref, keep.ref)


@pytest.fixture
def hubspot() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def deliver_with(session: Session, settings: Settings, crm: CRM, outbox_id: int) -> OutboxState | None:
    return deliver(session, outbox_id, replace(alert_services(settings), crm=crm)).state


def test_hubspot_merges_the_two_contacts_and_archives_the_second_callback_task(
    session: Session, settings: Settings, two_leads: tuple[Lead, Lead], hubspot: responses.RequestsMock
) -> None:
    keep, other = two_leads
    merge_by_hand(session, keep.ref, other.ref)
    session.commit()
    hubspot.delete(f"{HUBSPOT}/tasks/9002", status=204)
    merge = hubspot.post(f"{HUBSPOT}/contacts/merge", json={"id": "777", "properties": {}, "archived": False},
                         match=[matchers.json_params_matcher({"primaryObjectId": "501", "objectIdToMerge": "502"})])

    state = deliver_with(session, settings, HubSpotCRM(TOKEN), correct_row(session).id)

    assert state == OutboxState.DELIVERED
    assert merge.call_count == 1
    session.refresh(keep)
    assert keep.crm_contact_id == "777"  # HubSpot gives the merged record a new id
    correction = session.scalars(select(CrmCorrection)).one()
    assert correction.done_at is not None and "merged into 777" in (correction.outcome or "")


def test_a_hubspot_merge_whose_answer_was_lost_is_found_done_on_the_retry(
    session: Session, settings: Settings, two_leads: tuple[Lead, Lead], hubspot: responses.RequestsMock
) -> None:
    keep, other = two_leads
    merge_by_hand(session, keep.ref, other.ref)
    session.commit()
    row_id = correct_row(session).id
    hubspot.delete(f"{HUBSPOT}/tasks/9002", status=204)
    hubspot.post(f"{HUBSPOT}/contacts/merge", status=504)  # merged, but the answer never came
    assert deliver_with(session, settings, HubSpotCRM(TOKEN), row_id) == OutboxState.PENDING

    hubspot.delete(f"{HUBSPOT}/tasks/9002", status=404)  # archived already
    hubspot.post(f"{HUBSPOT}/contacts/merge", status=400,
                 json={"category": "VALIDATION_ERROR", "message": "already merged"})
    for old_id in ("501", "502"):  # both old ids now resolve to the merged record
        hubspot.get(f"{HUBSPOT}/contacts/{old_id}", json={"id": "777", "properties": {}},
                    match=[matchers.query_param_matcher({"properties": "hs_object_id"})])
    session.execute(OutboxMessage.__table__.update().values(next_attempt_at=func.now()))
    session.commit()

    assert deliver_with(session, settings, HubSpotCRM(TOKEN), row_id) == OutboxState.DELIVERED
    session.refresh(keep)
    assert keep.crm_contact_id == "777"


@pytest.fixture
def salesforce() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.post(f"{SF_LOGIN}/services/oauth2/token", json={
            "access_token": "00Dtest!token", "instance_url": "https://admitflow-test-instance.my.salesforce.com",
            "id": "x", "token_type": "Bearer", "issued_at": "1", "signature": "s"})
        yield mock


def test_salesforce_moves_the_tasks_to_the_surviving_lead_and_says_what_a_person_must_do(
    session: Session, settings: Settings, two_leads: tuple[Lead, Lead], salesforce: responses.RequestsMock
) -> None:
    keep, other = two_leads
    keep.crm_contact_id, other.crm_contact_id = "00Q5e00000Keep1AAA", "00Q5e00000Dupl1AAA"
    keep.crm_task_id, other.crm_task_id = "00T5e00000Keep1AAA", "00T5e00000Dupl1AAA"
    session.commit()
    merge_by_hand(session, keep.ref, other.ref)
    session.commit()
    salesforce.delete(f"{SF_DATA}/sobjects/Task/00T5e00000Dupl1AAA", status=204)
    salesforce.get(f"{SF_DATA}/query", json={"totalSize": 1, "done": True, "records": [
        {"attributes": {"type": "Task"}, "Id": "00T5e00000Note1AAA"}]})
    moved = salesforce.patch(f"{SF_DATA}/sobjects/Task/00T5e00000Note1AAA", status=204,
                             match=[matchers.json_params_matcher({"WhoId": "00Q5e00000Keep1AAA"})])
    crm = SalesforceCRM(ClientCredentialsFlow(SF_LOGIN, "3MVG9-test", "secret"))

    assert deliver_with(session, settings, crm, correct_row(session).id) == OutboxState.DELIVERED

    assert moved.call_count == 1
    query = salesforce.calls[2].request.url or ""
    assert "00Q5e00000Dupl1AAA" in query
    outcome = session.scalars(select(CrmCorrection.outcome)).one() or ""
    assert "merge Salesforce Lead 00Q5e00000Dupl1AAA into Lead 00Q5e00000Keep1AAA" in outcome
    told = session.scalars(select(AuditEvent.detail).where(AuditEvent.actor == "crm_correct")).one()
    assert told == outcome  # `admitflow audit --lead` shows the operator what is left to do
    session.refresh(keep)
    assert keep.crm_contact_id == "00Q5e00000Keep1AAA"


@pytest.fixture
def joined(session: Session, settings: Settings, form_object: dict[str, Any]) -> Lead:
    """A lead dedup made of two requests on one phone and inbox: Jordan's, and (an operator finds) Jordna's,
    someone else's. The first request's note is on the lead's CRM contact."""
    register_form(session, site=settings.site, form_object=form_object)
    first = submit(session, settings, 1, {})
    second = submit(session, settings, 2, {"1.3": "Jordna", "date_created": "2026-11-20 18:00:00"})
    assert first.lead_id == second.lead_id and first.lead is not None
    first.lead.crm_contact_id, first.lead.crm_task_id, second.crm_note_id = "501", "9001", "7002"
    session.commit()
    return first.lead


def test_splitting_by_hand_makes_a_lead_of_its_own_that_dedup_never_merges_back(
    session: Session, settings: Settings, joined: Lead
) -> None:
    second = max(joined.submissions, key=lambda each: each.id)
    alerts_before = count(session, OutboxKind.STAFF_ALERT)

    done = split_by_hand(session, joined.ref, second.id, settings)
    session.commit()

    split = second.lead
    assert split is not None and split.id != joined.id and split.split_from_id == joined.id
    assert split.first_name == "Jordna" and lead_first_names(joined) == ["Jordan"] and joined.repeat_count == 0
    assert count(session, OutboxKind.STAFF_ALERT) == alerts_before
    rows = session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(done.outbox_ids)))
    kinds = {row.kind: row for row in rows}
    assert kinds[OutboxKind.CRM_SYNC].state == OutboxState.PENDING
    assert session.scalars(select(CrmCorrection.note_id)).all() == ["7002"]  # the note leaves Jordan's record
    assert second.crm_note_id is None

    third = submit(session, settings, 3, {"1.3": "Jordna", "date_created": "2026-11-21 10:00:00"})
    assert third.lead_id == split.id
    assert session.scalar(select(func.count()).select_from(Lead).where(Lead.status != LeadStatus.MERGED)) == 2


def test_splitting_again_changes_nothing(session: Session, settings: Settings, joined: Lead) -> None:
    second = max(joined.submissions, key=lambda each: each.id)
    split_by_hand(session, joined.ref, second.id, settings)
    session.commit()

    again = split_by_hand(session, joined.ref, second.id, settings)

    assert not again.changed and "already" in again.summary
    only = min(joined.submissions, key=lambda each: each.id)
    with pytest.raises(CorrectionError, match="only request"):
        split_by_hand(session, joined.ref, only.id, settings)


def test_hubspot_removes_the_split_requests_note_from_the_first_record(
    session: Session, settings: Settings, joined: Lead, hubspot: responses.RequestsMock
) -> None:
    second = max(joined.submissions, key=lambda each: each.id)
    done = split_by_hand(session, joined.ref, second.id, settings)
    session.commit()
    removed = hubspot.delete(f"{HUBSPOT}/notes/7002", status=204)
    row = session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(done.outbox_ids),
                                                      OutboxMessage.kind == OutboxKind.CRM_CORRECT)).one()

    assert deliver_with(session, settings, HubSpotCRM(TOKEN), row.id) == OutboxState.DELIVERED
    assert removed.call_count == 1
    assert "note 7002 removed" in (session.scalars(select(CrmCorrection.outcome)).one() or "")

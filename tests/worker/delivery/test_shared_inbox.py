"""Two people on one inbox (or one phone) are two leads with two CRM records, and neither record flips."""

from __future__ import annotations

from typing import Any

import responses
from responses import matchers
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.hubspot.client import HubSpotCRM
from tests.conftest import make_entry
from worker.delivery.crm_sync import callback_task, contact_card, shared_identity
from worker.intake.entries import register_form, store_entry
from worker.leads.processing import process_submission
from worker.store.db import utcnow
from worker.store.models import Lead, Submission, SubmissionSource

CONTACTS = "https://api.hubapi.com/crm/v3/objects/contacts"
HOME = "okafor.family@example.org"


def submit(session: Session, settings: Settings, entry_id: int, **fields: Any) -> Submission:
    stored = store_entry(session, site=settings.site, entry=make_entry(entry_id, **fields), source=SubmissionSource.CLI)
    session.commit()
    process_submission(session, stored.submission_id, settings)
    session.commit()
    return session.get_one(Submission, stored.submission_id)


def test_the_second_person_on_a_shared_inbox_gets_a_record_of_their_own_without_the_address(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    sarah = submit(session, settings, 1, **{"1.3": "Sarah", "1.6": "Okafor", "2": HOME, "3": "(617) 555-0158"})
    morgan = submit(session, settings, 2, **{"1.3": "Morgan", "1.6": "Okafor", "2": HOME, "3": "(617) 555-0171",
                                             "ip": "198.51.100.23"})
    first, second = sarah.lead, morgan.lead
    assert isinstance(first, Lead) and isinstance(second, Lead) and first.id != second.id

    shared = shared_identity(session, [first, second])
    first_card = contact_card(first, sarah, shared=shared[first.id])
    second_card = contact_card(second, morgan, shared=shared[second.id])

    assert first_card.email == HOME and first_card.email_shared_with is None
    assert second_card.email_shared_with == first.ref
    assert first_card.match_existing  # Sarah's own contact, found by the address, is hers
    assert not second_card.match_existing
    task = callback_task(second, None, utcnow(), email_shared_with=second_card.email_shared_with)
    assert f"Shares an email inbox with lead {first.ref}" in task.body and HOME not in task.body

    with responses.RequestsMock(assert_all_requests_are_fired=True) as hubspot:
        # No search by the shared address or phone (it would find Sarah's contact), no address on Morgan's.
        created = hubspot.post(CONTACTS, json={"id": "602"}, match=[matchers.json_params_matcher({"properties": {
            "firstname": "Morgan", "lastname": "Okafor", "phone": "+16175550171",
            "hs_lead_status": "NEW", "lifecyclestage": "lead"}})])
        assert HubSpotCRM("pat-na1-00000000-test").upsert_contact(second_card, None) == "602"
        assert created.call_count == 1


def test_what_each_lead_of_a_batch_shares_is_read_from_every_other_live_lead(session: Session) -> None:
    def lead(ref: str, phone: str | None, email: str | None, status: str = "new") -> Lead:
        return Lead(ref=ref, phone_index=phone, email_index=email, status=status)

    first_on_inbox, second_on_inbox = lead("R-AAAA1", "p1", "home"), lead("R-AAAA2", "p2", "home")
    phone_only, phone_and_email = lead("R-AAAA3", "p3", None), lead("R-AAAA4", "p3", "own")
    merged_away = lead("R-AAAA5", "p5", "gone", status="merged")
    alone = lead("R-AAAA6", "p5", "gone")
    batch = [first_on_inbox, second_on_inbox, phone_only, phone_and_email, merged_away, alone]
    session.add_all(batch)
    session.commit()

    shared = shared_identity(session, batch)

    assert shared[first_on_inbox.id] == (None, False), "the inbox's address stays with the lead that had it first"
    assert shared[second_on_inbox.id] == ("R-AAAA1", True)
    assert shared[phone_only.id] == (None, True), "no address, and its phone is another person's too"
    assert shared[phone_and_email.id] == (None, False), "found by its own address"
    assert shared[alone.id] == (None, False), "a merged lead is no other person"

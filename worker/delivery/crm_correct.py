"""Bringing the CRM in line with a merge or a split: the lead's pending `CrmCorrection`s, one at a time.

A merge of two leads that each have a CRM record merges the records (HubSpot) or moves the duplicate's activities
to the survivor and says what a person must finish (Salesforce); a request split off to another lead takes its
note off this lead's record (the new lead's own sync writes it again on its record). Each correction is marked
done as soon as the CRM answers, so a retry resumes with the next one. No staff alert is sent.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from integrations.crm import CRM
from worker.delivery.crm_sync import lease_lead, release_lead
from worker.store.db import utcnow
from worker.store.models import CrmCorrection, CrmCorrectionKind, Lead, OutboxMessage
from worker.trust import audit

log = logging.getLogger(__name__)


def correct_crm(session: Session, row: OutboxMessage, crm: CRM) -> None:
    """Do the lead's pending corrections, holding its CRM lease so that no sync of it runs meanwhile."""
    lease_lead(session, row.lead_id, utcnow())
    try:
        for correction in session.scalars(
            select(CrmCorrection)
            .where(CrmCorrection.lead_id == row.lead_id, CrmCorrection.done_at.is_(None))
            .order_by(CrmCorrection.id)
        ).all():
            _correct(session, correction, crm)
            correction.done_at, correction.outcome = utcnow(), (correction.outcome or "")[:255]
            lead_ref = session.get_one(Lead, correction.lead_id).ref
            audit.record(session, audit.AuditAction.CHANGE, actor_kind=audit.ActorKind.SYSTEM, actor="crm_correct",
                         lead_ref=lead_ref, outbox_id=row.id, detail=correction.outcome)
            session.commit()
    finally:
        session.rollback()
        release_lead(session, row.lead_id)


def _correct(session: Session, correction: CrmCorrection, crm: CRM) -> None:
    lead = session.get_one(Lead, correction.lead_id, populate_existing=True)
    if correction.kind == CrmCorrectionKind.REMOVE_NOTE:
        if correction.note_id:
            session.commit()  # no transaction stays open across a CRM call (the reads above are done)
            crm.remove_note(correction.note_id)
        correction.outcome = f"note {correction.note_id} removed from {lead.ref}'s record"
        return
    other = session.get_one(Lead, correction.other_lead_id) if correction.other_lead_id else None
    if other is None or not other.crm_contact_id or other.crm_contact_id == lead.crm_contact_id:
        correction.outcome = "nothing to merge in the CRM"
        return
    if lead.crm_contact_id is None:
        lead.crm_contact_id, lead.crm_task_id = other.crm_contact_id, other.crm_task_id
        correction.outcome = f"{lead.ref} took over {other.ref}'s CRM record {other.crm_contact_id}"
        return
    session.commit()  # as above: nothing is written yet, the reads end before the call
    merged = crm.merge_contacts(lead.crm_contact_id, other.crm_contact_id,
                                other.crm_task_id if other.crm_task_id != lead.crm_task_id else None)
    correction.outcome = (f"{crm.name} record {other.crm_contact_id} ({other.ref}) merged into "
                          f"{merged.contact_id} ({lead.ref})")
    if merged.left_for_a_person:
        correction.outcome = f"{crm.name}: {merged.left_for_a_person}"
        log.warning("lead %s merged into %s; in %s, %s", other.ref, lead.ref, crm.name, merged.left_for_a_person)
    lead.crm_contact_id = merged.contact_id
    other.crm_task_id = None

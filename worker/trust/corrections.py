"""Correcting dedup by hand: two leads that are one person merged, a request that is someone else's split off.

Both are an operator's decision, audited, and safe to repeat: a second run finds the work done and changes
nothing. Neither texts staff: merging drops the merged lead's staff alerts not yet sent, and a lead split off gets
its own CRM record and callback task but no alert (the person was already called about, under the other lead). The
CRM follows through the outbox: a `crm_correct` row (`worker/delivery/crm_correct.py`) merges the two records or
removes the moved request's note, and `crm_sync` rows write the leads' records again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.settings import Settings
from worker.leads.dedup import Applicant, absorb, fresh_refs, lock_identity, new_lead, rebuild
from worker.leads.processing import FormReader, stored_applicant
from worker.store.db import utcnow
from worker.store.models import (
    Claim,
    CrmCorrection,
    CrmCorrectionKind,
    EscalationTimer,
    Lead,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    Submission,
    SubmissionState,
    TimerState,
)
from worker.store.phi import current_vault
from worker.trust import audit


class CorrectionError(ValueError):
    """A merge or split that cannot be done as asked; the message says why (never PHI)."""


@dataclass
class Correction:
    """What a merge or split did: a PHI-free summary for the operator, and the outbox rows to dispatch."""

    summary: str
    outbox_ids: list[int] = field(default_factory=list)
    changed: bool = True


def merge_by_hand(session: Session, keep_ref: str, other_ref: str) -> Correction:
    """Merge lead `other_ref` into `keep_ref`. The caller commits, then dispatches `outbox_ids`."""
    keep, other = _lead(session, keep_ref), _lead(session, other_ref)
    if keep.id == other.id:
        raise CorrectionError(f"{keep_ref} and {other_ref} are one lead")
    if other.status == LeadStatus.MERGED:
        if other.merged_into_id == keep.id:
            return Correction(f"{other.ref} was merged into {keep.ref} already; nothing changed", changed=False)
        raise CorrectionError(f"{other.ref} was merged into another lead already; merge that lead instead")
    if keep.status == LeadStatus.MERGED:
        raise CorrectionError(f"{keep.ref} was merged into another lead; merge into that lead instead")
    _lock(session, keep, other)
    first = session.scalar(select(Submission.id).where(Submission.lead_id == other.id).order_by(Submission.id))
    dropped = _drop_alerts(session, other, keep)
    _move_claim_and_timer(session, other, keep)
    if keep.split_from_id == other.id:
        keep.split_from_id = None
    rows = []
    if absorb(session, keep, other) and first is not None:
        rows.append(_enqueue(session, OutboxKind.CRM_CORRECT, keep, first))
    detail = f"merged {other.ref} into {keep.ref} by hand; {dropped} unsent staff alert(s) dropped"
    audit.operator_did(session, audit.AuditAction.CHANGE, lead_ref=keep.ref, detail=detail)
    audit.operator_did(session, audit.AuditAction.CHANGE, lead_ref=other.ref, detail=detail)
    session.flush()
    crm = "; the CRM records are merged through the outbox" if rows else ""
    return Correction(f"{other.ref} merged into {keep.ref}{crm}; staff were not texted", [row.id for row in rows])


def split_by_hand(session: Session, lead_ref: str, submission_id: int, settings: Settings) -> Correction:
    """Move request `submission_id` out of lead `lead_ref` into a lead of its own, which dedup never merges back.
    The caller commits, then dispatches `outbox_ids`."""
    lead = _lead(session, lead_ref)
    submission = session.get(Submission, submission_id)
    if submission is None:
        raise CorrectionError(f"no submission {submission_id}")
    if submission.lead_id != lead.id:
        owner = session.get(Lead, submission.lead_id) if submission.lead_id else None
        if owner is not None and owner.split_from_id == lead.id:
            return Correction(f"submission {submission_id} was split from {lead.ref} into {owner.ref} already; "
                              "nothing changed", changed=False)
        raise CorrectionError(f"submission {submission_id} does not belong to {lead.ref}")
    if lead.status == LeadStatus.MERGED:
        raise CorrectionError(f"{lead.ref} was merged into another lead; split from that lead instead")
    others = [each for each in lead.submissions if each.id != submission.id and each.state == SubmissionState.PROCESSED]
    if not others:
        raise CorrectionError(f"submission {submission_id} is {lead.ref}'s only request: nothing to split")
    forms, region, vault = FormReader(session, settings), settings.phone_default_region, current_vault()
    requests = {each.id: _request(forms, each, region) for each in [submission, *others]}
    moved = requests[submission.id]
    if moved is None:
        raise CorrectionError(f"submission {submission_id} can no longer be read (its form is gone or its entry "
                              "was purged): it cannot be made a lead of its own")
    _lock(session, lead)
    applicant, at = moved
    digests = {kind: vault.blind_index(kind, value) for kind, value in
               (("phone", applicant.phone), ("email", applicant.email)) if value}
    split = new_lead(applicant, digests, at, fresh_refs(session, 1)[0])
    split.split_from_id = lead.id
    session.add(split)
    session.flush()
    kept = [(request[0], _digests(vault, request[0]), request[1], _was_correction(each))
            for each in others if (request := requests[each.id]) is not None]
    if kept:
        rebuild(lead, kept)
    lead.repeat_count = max(0, len(others) - 1)
    evidence = {"v": 1, "outcome": "split", "lead": split.ref, "from": lead.ref,
                "before": submission.match_evidence, "candidates": []}
    submission.lead, submission.is_repeat, submission.match_evidence = split, False, evidence
    rows = [_enqueue(session, OutboxKind.CRM_SYNC, split, submission.id)]
    latest = max(others, key=lambda each: (each.requested_at or each.received_at, each.id))
    rows.append(_enqueue(session, OutboxKind.CRM_SYNC, lead, latest.id))
    if submission.crm_note_id:
        session.add(CrmCorrection(lead_id=lead.id, kind=CrmCorrectionKind.REMOVE_NOTE, note_id=submission.crm_note_id))
        submission.crm_note_id = None
        rows.append(_enqueue(session, OutboxKind.CRM_CORRECT, lead, submission.id))
    detail = f"split submission {submission.id} from {lead.ref} into {split.ref} by hand"
    audit.operator_did(session, audit.AuditAction.CHANGE, lead_ref=lead.ref, submission_id=submission.id,
                       detail=detail)
    audit.operator_did(session, audit.AuditAction.CHANGE, lead_ref=split.ref, submission_id=submission.id,
                       detail=detail)
    session.flush()
    return Correction(f"submission {submission.id} split from {lead.ref} into {split.ref}; the CRM follows "
                      f"through the outbox; staff were not texted (the callback task for {split.ref} is in the CRM)",
                      [row.id for row in rows])


def _lead(session: Session, ref: str) -> Lead:
    lead = session.scalar(select(Lead).where(Lead.ref == ref.strip().upper()))
    if lead is None:
        raise CorrectionError(f"no lead {ref}")
    return lead


def _lock(session: Session, *leads: Lead) -> None:
    """Take dedup's locks on the leads' phones and emails, so no submission is being matched to them meanwhile."""
    vault = current_vault()
    lookups: dict[str, tuple[str, ...]] = {}
    for lead in leads:
        for kind, value in (("phone", lead.phone), ("email", lead.email)):
            if value:
                lookups[kind] = (*lookups.get(kind, ()), *vault.blind_indexes(kind, value))
    lock_identity(session, lookups)
    for lead in leads:
        session.refresh(lead)


def _request(forms: FormReader, submission: Submission, region: str) -> tuple[Applicant, Any] | None:
    applicant = stored_applicant(forms, submission, region)
    return None if applicant is None else (applicant, submission.requested_at or submission.received_at)


def _digests(vault: Any, applicant: Applicant) -> dict[str, str]:
    return {kind: vault.blind_index(kind, value)
            for kind, value in (("phone", applicant.phone), ("email", applicant.email)) if value}


def _was_correction(submission: Submission) -> bool:
    evidence = submission.match_evidence
    return isinstance(evidence, dict) and evidence.get("outcome") == "corrected"


def _drop_alerts(session: Session, other: Lead, keep: Lead) -> int:
    """The merged lead's staff alerts and acknowledgements not yet sent: staff hear about one person once."""
    dropped = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.lead_id == other.id, OutboxMessage.state == OutboxState.PENDING,
               OutboxMessage.kind.in_([OutboxKind.STAFF_ALERT, OutboxKind.PERSON_ACK]))
        .values(state=OutboxState.DROPPED, leased_until=None,
                last_error=f"lead merged by hand into {keep.ref}: staff are not texted twice about one person")
    )
    return int(dropped.rowcount)  # type: ignore[attr-defined]


def _move_claim_and_timer(session: Session, other: Lead, keep: Lead) -> None:
    """Who claimed the merged lead keeps the person; reminders about the merged lead stop (or go on for the
    survivor, when it had none of its own)."""
    claims = {claim.lead_id: claim for claim in session.scalars(
        select(Claim).where(Claim.lead_id.in_([other.id, keep.id])))}
    if other.id in claims and keep.id not in claims:
        claims[other.id].lead_id = keep.id
    timers = {timer.lead_id: timer for timer in session.scalars(
        select(EscalationTimer).where(EscalationTimer.lead_id.in_([other.id, keep.id])))}
    moved = timers.get(other.id)
    if moved is not None and moved.state == TimerState.PENDING:
        if keep.id in timers or keep.id in claims or other.id in claims:
            moved.state = TimerState.DONE
        else:
            moved.lead_id = keep.id
    session.flush()


def _enqueue(session: Session, kind: OutboxKind, lead: Lead, submission_id: int) -> OutboxMessage:
    """An outbox row of this kind for this request, made due now: a delivered one is put back in line."""
    row = session.scalar(select(OutboxMessage).where(OutboxMessage.kind == kind,
                                                     OutboxMessage.submission_id == submission_id))
    if row is None:
        row = OutboxMessage(kind=kind, lead_id=lead.id, submission_id=submission_id)
        session.add(row)
    else:
        row.lead_id, row.state, row.attempts = lead.id, OutboxState.PENDING, 0
        row.next_attempt_at, row.leased_until, row.last_error = utcnow(), None, None
    session.flush()
    return row

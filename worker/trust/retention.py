"""Retention: raw entries (and the message inside them) are purged once they are old and the CRM holds the lead;
with a missed call's entry go the caller's number and the voicemail's address and transcription on its call row.

A submission's payload is replaced by a stub without PHI (`{"id", "form_id", "purged": true}`) when it arrived
more than RETENTION_DAYS ago and every CRM sync of its lead was delivered. A lead whose CRM sync is pending,
dead or dropped keeps everything: the entry is then the only place the person's request exists. Entries that
never became a lead (flagged, spam) are kept for an operator. Every purge is audited in its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, exists, func, select, update
from sqlalchemy.orm import Session

from worker.store.models import Lead, OutboxKind, OutboxMessage, OutboxState, PayloadPurge, PhoneCall, Submission
from worker.trust import audit

BATCH = 200


def purged_stub(submission: Submission) -> dict[str, object]:
    """What is left of a purged entry: enough to recognise it, nothing the person typed."""
    return {"id": submission.entry_id, "form_id": submission.form_id, "purged": True}


def _due(cutoff: datetime) -> Select[int]:
    crm_synced = exists().where(
        OutboxMessage.lead_id == Submission.lead_id, OutboxMessage.kind == OutboxKind.CRM_SYNC
    )
    crm_undelivered = exists().where(
        OutboxMessage.lead_id == Submission.lead_id,
        OutboxMessage.kind == OutboxKind.CRM_SYNC,
        OutboxMessage.state != OutboxState.DELIVERED,
    )
    already = exists().where(PayloadPurge.submission_id == Submission.id)
    return (
        select(Submission.id)
        .join(Lead, Lead.id == Submission.lead_id)
        .where(
            Submission.received_at < cutoff, Lead.crm_contact_id.is_not(None), crm_synced, ~crm_undelivered,
            ~already,
        )
    )


@dataclass(frozen=True)
class PurgeCounts:
    due: int  # payloads this run purges (or, dry, would purge)
    kept_undelivered: int  # old enough, but their lead's CRM sync is not delivered


def purge_counts(session: Session, now: datetime, retention_days: int) -> PurgeCounts:
    cutoff = now - timedelta(days=retention_days)
    due = session.scalar(select(func.count()).select_from(_due(cutoff).subquery())) or 0
    old_with_lead = session.scalar(
        select(func.count()).select_from(Submission).where(
            Submission.received_at < cutoff, Submission.lead_id.is_not(None),
            ~exists().where(PayloadPurge.submission_id == Submission.id),
        )
    ) or 0
    return PurgeCounts(due=due, kept_undelivered=old_with_lead - due)


def purge_batch(session: Session, now: datetime, retention_days: int, actor: str) -> int:
    """Purge up to BATCH due payloads, auditing each in the same transaction; the caller commits. Returns how
    many were purged (0: nothing left)."""
    ids = session.scalars(_due(now - timedelta(days=retention_days)).order_by(Submission.id).limit(BATCH)).all()
    for submission_id in ids:
        submission = session.get_one(Submission, submission_id, with_for_update=True)
        submission.payload = purged_stub(submission)
        # A missed call's row holds the caller's number and the voicemail's address and transcription.
        session.execute(update(PhoneCall).where(PhoneCall.submission_id == submission_id).values(
            caller=None, recording_url=None, transcription=None))
        session.add(PayloadPurge(submission_id=submission_id, purged_at=now))
        audit.record(
            session, audit.AuditAction.PURGE, actor_kind=audit.ActorKind.OPERATOR, actor=actor,
            lead_ref=submission.lead.ref if submission.lead else None, submission_id=submission_id,
            detail=f"raw entry purged after {retention_days} days",
        )
    return len(ids)

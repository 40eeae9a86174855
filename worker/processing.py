"""Turn a stored submission into a lead, and decide, in the same transaction, what must be sent about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.settings import Settings
from config.sites import load_sites, site_named
from integrations.gravityforms.mapping import ApplicantFields, read_applicant
from integrations.gravityforms.models import EntryMeta
from worker.db import utcnow
from worker.dedup import Applicant, assign_lead
from worker.intake import known_form
from worker.models import (
    Lead,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
    Submission,
    SubmissionSource,
    SubmissionState,
)
from worker.normalize import MAX_MESSAGE_CHARS, clean_text, normalize_email, normalize_phone
from worker.phi import current_vault
from worker.screening import screen

GF_NOT_A_PERSON = frozenset({"spam", "trash"})


@dataclass(frozen=True)
class Outcome:
    """What processing did. Counts only; no PHI."""

    state: SubmissionState | None  # None: nothing done, it had been processed already
    lead_id: int | None = None
    new_lead: bool = False
    outbox_ids: list[int] = field(default_factory=list)


def form_overrides(settings: Settings, site_name: str, form_id: str) -> dict[str, str]:
    """The per-form field roles configured for this site (SITES_FILE), if any."""
    site = site_named(load_sites(settings), site_name)
    form = site.form(form_id) if site else None
    return {str(role): input_id for role, input_id in form.fields.items()} if form else {}


def applicant_fields(session: Session, submission: Submission, settings: Settings) -> ApplicantFields | None:
    """The submission's fields read through its form, or None when the form is not registered."""
    form = known_form(session, submission.site, submission.form_id)
    if form is None:
        return None
    return read_applicant(form, submission.payload, form_overrides(settings, submission.site, submission.form_id))


def normalized_applicant(fields: ApplicantFields, meta: EntryMeta, region: str) -> Applicant:
    device = f"{meta.ip}|{meta.user_agent}" if meta.ip and meta.user_agent else None
    return Applicant(
        first_name=clean_text(fields.first_name),
        last_name=clean_text(fields.last_name),
        phone=normalize_phone(fields.phone, region),
        email=normalize_email(fields.email),
        consent_to_text=fields.consent_to_text,
        consent=fields.consent,
        device=device,
    )


def message_text(fields: ApplicantFields) -> str | None:
    return clean_text(fields.message, limit=MAX_MESSAGE_CHARS)


def _flag(submission: Submission, reason: str) -> Outcome:
    submission.state, submission.flag_reason, submission.processed_at = SubmissionState.FLAGGED, reason, utcnow()
    return Outcome(SubmissionState.FLAGGED)


def _too_old_to_alert(submission: Submission, requested_at: datetime, settings: Settings) -> bool:
    """History imported by a backfill goes to the CRM, but does not text staff about last month's requests."""
    if submission.source != SubmissionSource.BACKFILL:
        return False
    return utcnow() - requested_at > timedelta(hours=settings.backfill_alert_max_age_hours)


def _staff_should_hear_again(session: Session, lead: Lead, settings: Settings) -> bool:
    """A repeat request re-alerts staff unless the lead is claimed or was alerted moments ago (a burst of
    resubmissions must not flood a phone). Runs under the dedup lock, so concurrent repeats decide in turn."""
    if lead.status == LeadStatus.CLAIMED:
        return False
    since = utcnow() - timedelta(minutes=settings.alert_coalesce_minutes)
    recent = session.scalar(
        select(OutboxMessage.id).where(
            OutboxMessage.lead_id == lead.id,
            OutboxMessage.kind == OutboxKind.STAFF_ALERT,
            OutboxMessage.created_at >= since,
        ).limit(1)
    )
    return recent is None


def process_submission(session: Session, submission_id: int, settings: Settings) -> Outcome:
    """Assign the submission to a lead and write the outbox rows for CRM sync and the staff alert.

    Safe to run any number of times: only a submission still in `received` is touched, and the row is locked
    first, so two workers racing on it do the work once. The caller commits, then dispatches `outbox_ids`.
    """
    claimed = session.execute(
        update(Submission)
        .where(Submission.id == submission_id, Submission.state == SubmissionState.RECEIVED)
        .values(processed_at=utcnow())
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return Outcome(None)
    submission = session.get_one(Submission, submission_id, populate_existing=True)
    meta = EntryMeta.model_validate(submission.payload)

    if meta.status in GF_NOT_A_PERSON:
        submission.state = SubmissionState.SPAM
        return Outcome(SubmissionState.SPAM)
    fields = applicant_fields(session, submission, settings)
    if fields is None:
        return _flag(
            submission,
            f"unknown_form: form {submission.form_id} is not registered for site {submission.site}; run "
            "`admitflow forms add FORM.json` and it is processed automatically",
        )
    reason = None if submission.released else screen(fields)
    if reason is not None:
        return _flag(
            submission,
            f"screened_{reason}: looks automated; review with `admitflow submissions show {submission.id} --reveal`"
            f" and release a real person with `admitflow submissions release {submission.id}`",
        )
    applicant = normalized_applicant(fields, meta, settings.phone_default_region)
    if applicant.phone is None and applicant.email is None:
        return _flag(
            submission,
            "no_contact: neither a valid phone number nor a valid email; review it with "
            f"`admitflow submissions show {submission.id} --reveal`",
        )

    requested_at = meta.date_created or submission.received_at
    vault = current_vault()
    submission.requested_at = requested_at
    submission.device_index = vault.blind_index("device", applicant.device) if applicant.device else None
    assignment = assign_lead(
        session, applicant, vault,
        at=requested_at,
        window=timedelta(days=settings.dedup_window_days),
        correction_window=timedelta(minutes=settings.correction_window_minutes),
    )
    lead, created = assignment.lead, assignment.created
    submission.state, submission.lead_id, submission.is_repeat = SubmissionState.PROCESSED, lead.id, not created
    kinds = [OutboxKind.CRM_SYNC]
    if not _too_old_to_alert(submission, requested_at, settings) and (
        created or _staff_should_hear_again(session, lead, settings)
    ):
        kinds.append(OutboxKind.STAFF_ALERT)
    if created and settings.person_ack_sms and lead.consent_to_text and lead.phone and not _too_old_to_alert(
        submission, requested_at, settings
    ):
        kinds.append(OutboxKind.PERSON_ACK)
    rows = [OutboxMessage(kind=kind, lead_id=lead.id, submission_id=submission.id) for kind in kinds]
    session.add_all(rows)
    session.flush()
    return Outcome(SubmissionState.PROCESSED, lead.id, created, [row.id for row in rows])

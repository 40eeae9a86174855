"""Turn a stored submission into a lead, and decide, in the same transaction, what must be sent about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from config.sites import load_sites, site_named
from integrations.gravityforms.mapping import ApplicantFields, FormMapping, infer_mapping
from integrations.gravityforms.models import EntryMeta, Form
from worker.intake.entries import PHONE_SOURCES
from worker.intake.normalize import (
    MAX_MESSAGE_CHARS,
    clean_text,
    looks_like_a_phone,
    normalize_email,
    normalize_phone,
)
from worker.intake.phone_entries import CALL_FORM, TEXT_FORM, PhoneEntry, phone_fields
from worker.intake.screening import screen
from worker.leads.best_time import requested_call_time
from worker.leads.dedup import Applicant, Deduplicator, survivor
from worker.leads.page_writes import (
    ClaimedSubmission,
    NewOutboxRow,
    claim,
    insert_outbox,
    update_submissions,
)
from worker.store.db import among, utcnow
from worker.store.models import (
    FormDefinition,
    Lead,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
    PhoneCall,
    Submission,
    SubmissionSource,
    SubmissionState,
)
from worker.store.phi import current_vault

GF_NOT_A_PERSON = frozenset({"spam", "trash"})
# The flag reason of a lead processed normally but not texted about on its own: its device was past
# ALERT_SOURCE_MAX_PER_HOUR. The first such submission in an hour carries the staff alert that summarizes them.
SOURCE_FLOOD = "source_flood"
SOURCE_FLOOD_WINDOW = timedelta(hours=1)
# The flag reason of a lead processed normally whose phone, as typed, is not a number we can read: kept as typed in
# the CRM note, for staff to check before calling.
PHONE_UNPARSED = (
    "phone_unparsed: the phone number as typed could not be read as a number (PHONE_DEFAULT_REGION or a missing "
    "country code?); it is in the CRM note as typed: check it before calling"
)
# A person texting the center's number gets SMS_AUTO_REPLY at most this often.
AUTO_REPLY_EVERY = timedelta(hours=24)


@dataclass(frozen=True)
class Outcome:
    """What processing did. Counts only; no PHI."""

    state: SubmissionState | None  # None: nothing done, it had been processed already
    lead_id: int | None = None
    new_lead: bool = False
    outbox_ids: list[int] = field(default_factory=list)


class FormReader:
    """Reads entries through their form and the site's configured field roles, each form's mapping made once."""

    def __init__(self, session: Session, settings: Settings) -> None:
        self.session, self.settings = session, settings
        self._forms: dict[tuple[str, str], tuple[Form, FormMapping] | None] = {}

    def form(self, site: str, form_id: str) -> tuple[Form, FormMapping] | None:
        """The registered form and its mapping, or None when the form is not registered."""
        key = (site, form_id)
        if key not in self._forms:
            self._forms[key] = _mapping(self.session, self.settings, site, form_id)
        return self._forms[key]

    def applicant_fields(self, submission: Submission | ClaimedSubmission) -> ApplicantFields | None:
        """The submission's fields read through its form, or None when the form is not registered. A call or text
        to the center's number has no form: its entry says what it is."""
        if submission.source in PHONE_SOURCES:
            return phone_fields(PhoneEntry.model_validate(submission.payload))
        known = self.form(submission.site, submission.form_id)
        return None if known is None else known[1].read(submission.payload)

    def first_name(self, submission: Submission) -> str | None:
        """The first name the submission was read with, None when it has none (or its form is gone)."""
        fields = self.applicant_fields(submission)
        return None if fields is None else clean_text(fields.first_name)


# Validating a form definition and inferring its mapping costs more than reading an entry through it: a process
# keeps the mappings it made, keyed by what they were made from (the definition as of its `updated_at`, which
# registering it again moves, and the site's configured field roles).
_MAPPINGS: dict[tuple[str, str, datetime, tuple[tuple[str, str], ...]], tuple[Form, FormMapping]] = {}
_MAPPINGS_KEPT = 256


def _mapping(session: Session, settings: Settings, site: str, form_id: str) -> tuple[Form, FormMapping] | None:
    registered = (FormDefinition.site == site) & (FormDefinition.form_id == form_id)
    updated_at = session.scalar(select(FormDefinition.updated_at).where(registered))
    if updated_at is None:
        return None
    overrides = form_overrides(settings, site, form_id)
    key = (site, form_id, updated_at, tuple(sorted(overrides.items())))
    if key not in _MAPPINGS:
        # Read apart from its time: a definition is large, and the time alone says whether the kept one is current.
        definition = session.scalar(select(FormDefinition.definition).where(registered))
        if definition is None:
            return None  # removed between the two reads
        if len(_MAPPINGS) >= _MAPPINGS_KEPT:
            _MAPPINGS.clear()
        form = Form.model_validate(definition)
        _MAPPINGS[key] = (form, infer_mapping(form, overrides))
    return _MAPPINGS[key]


def asked_call_time(call_from: datetime, asked_at: datetime) -> datetime | None:
    """The time read at processing (`call_from`) as a call time: None when it is the time of asking (as soon as
    possible)."""
    return call_from if call_from > asked_at else None


def call_time_of(session: Session, submission: Submission, settings: Settings,
                 forms: FormReader | None = None) -> datetime | None:
    """The time this submission asked to be called, or None for as soon as possible: as read when it was processed
    (`call_from`), or from its form's best-time field for one processed before that was kept. `forms`: a reader
    that has read the form already."""
    asked_at = submission.requested_at or submission.received_at
    if submission.call_from is not None:
        return asked_call_time(submission.call_from, asked_at)
    fields = (forms or FormReader(session, settings)).applicant_fields(submission)
    if fields is None or not fields.best_time:
        return None
    return requested_call_time(fields.best_time, asked_at, ZoneInfo(settings.center_timezone))


def applicant_fields(session: Session, submission: Submission, settings: Settings) -> ApplicantFields | None:
    """The submission's fields read through its form, or None when the form is not registered."""
    return FormReader(session, settings).applicant_fields(submission)


def form_overrides(settings: Settings, site_name: str, form_id: str) -> dict[str, str]:
    """The per-form field roles configured for this site (SITES_FILE), if any."""
    site = site_named(load_sites(settings), site_name)
    form = site.form(form_id) if site else None
    return {str(role): input_id for role, input_id in form.fields.items()} if form else {}


def device_evidence(meta: EntryMeta) -> str | None:
    """The sender's IP and browser as one string, the device evidence dedup and alert coalescing digest."""
    return f"{meta.ip}|{meta.user_agent}" if meta.ip and meta.user_agent else None


def normalized_applicant(fields: ApplicantFields, meta: EntryMeta, region: str) -> Applicant:
    device = device_evidence(meta)
    return Applicant(
        first_name=clean_text(fields.first_name),
        last_name=clean_text(fields.last_name),
        phone=normalize_phone(fields.phone, region),
        email=normalize_email(fields.email),
        consent_to_text=fields.consent_to_text,
        consent=fields.consent,
        device=device,
    )


def stored_applicant(forms: FormReader, submission: Submission | ClaimedSubmission, region: str) -> Applicant | None:
    """The applicant a processed submission was read as; None when its form is gone or its entry was purged."""
    fields = forms.applicant_fields(submission)
    return None if fields is None else normalized_applicant(fields, EntryMeta.model_validate(submission.payload),
                                                            region)


def message_text(fields: ApplicantFields) -> str | None:
    return clean_text(fields.message, limit=MAX_MESSAGE_CHARS)


def phone_unparsed(fields: ApplicantFields, applicant: Applicant) -> bool:
    """The person typed a phone number that cannot be read as one: kept as typed, never silently dropped."""
    return applicant.phone is None and looks_like_a_phone(fields.phone)


def _flag(submission: ClaimedSubmission, reason: str) -> Outcome:
    submission.state, submission.flag_reason, submission.processed_at = SubmissionState.FLAGGED, reason, utcnow()
    return Outcome(SubmissionState.FLAGGED)


def _too_old_to_alert(submission: ClaimedSubmission, requested_at: datetime, settings: Settings) -> bool:
    """History imported by a backfill goes to the CRM, but does not text staff about last month's requests."""
    if submission.source != SubmissionSource.BACKFILL:
        return False
    return utcnow() - requested_at > timedelta(hours=settings.backfill_alert_max_age_hours)


def _staff_should_hear_again(session: Session, lead: Lead, settings: Settings, page: _PageRows) -> bool:
    """A repeat request re-alerts staff unless the lead is claimed or was alerted moments ago (a burst of
    resubmissions must not flood a phone). Runs under the dedup lock, so concurrent repeats decide in turn."""
    if lead.status == LeadStatus.CLAIMED:
        return False
    if settings.alert_coalesce_minutes > 0 and page.has(OutboxKind.STAFF_ALERT, lead):
        return False
    if lead.id is None:
        return True
    since = utcnow() - timedelta(minutes=settings.alert_coalesce_minutes)
    recent = session.scalar(
        select(OutboxMessage.id).where(
            OutboxMessage.lead_id == lead.id,
            OutboxMessage.kind == OutboxKind.STAFF_ALERT,
            OutboxMessage.created_at >= since,
        ).limit(1)
    )
    return recent is None


def _alerts_from_device(devices: tuple[str, ...], page: _PageRows) -> tuple[int, int]:
    """Staff alerts decided within the flood window for submissions from this device (its digests under every
    blind-index key), this page's included: (one per lead, flood summaries). Runs under the dedup lock on the
    device."""
    reasons = [*page.alert_reasons_from(devices), *page.stored_alert_reasons(devices)]
    summaries = sum(1 for reason in reasons if reason and reason.startswith(SOURCE_FLOOD))
    return len(reasons) - summaries, summaries


def _alert_or_coalesce(submission: ClaimedSubmission, device: str | None, settings: Settings, page: _PageRows
                       ) -> bool:
    """Does this submission get a staff alert? Past ALERT_SOURCE_MAX_PER_HOUR alerts from one device in an hour,
    its leads are marked instead, and only the first of them alerts staff, with a summary of the flood."""
    limit = settings.alert_source_max_per_hour
    if not (limit and device):
        return True
    per_lead, summaries = _alerts_from_device(current_vault().blind_indexes("device", device), page)
    if per_lead < limit:
        return True
    submission.flag_reason = (
        f"{SOURCE_FLOOD}: over ALERT_SOURCE_MAX_PER_HOUR={limit} staff alerts in an hour from this device, so staff "
        "got one summary text instead of one per lead; the lead is in the CRM with its callback task"
    )
    return summaries == 0


@dataclass(frozen=True)
class _Ready:
    """A submission that is a person with a way to reach them: what dedup decides about."""

    submission: ClaimedSubmission
    applicant: Applicant
    requested_at: datetime
    call_from: datetime  # the time asked for, or `requested_at` for as soon as possible
    phone: PhoneEntry | None = None  # a call or text to the center's number
    phone_unparsed: bool = False


def _screened(submission: ClaimedSubmission, reason: str) -> Outcome:
    return _flag(
        submission,
        f"screened_{reason}: looks automated; review with `admitflow submissions show {submission.id} --reveal`"
        f" and release a real person with `admitflow submissions release {submission.id}`",
    )


def _triage_phone(submission: ClaimedSubmission) -> Outcome | _Ready:
    """A call or text is a person: a call whose caller withheld their number still becomes a lead (staff see it,
    with nothing to call back). A text is screened like a form's message."""
    entry = PhoneEntry.model_validate(submission.payload)
    reason = None if submission.released or entry.form_id != TEXT_FORM else screen(phone_fields(entry))
    if reason is not None:
        return _screened(submission, reason)
    applicant = Applicant(first_name=None, last_name=None, phone=entry.caller, email=None)
    requested_at = entry.date_created or submission.received_at
    return _Ready(submission, applicant, requested_at, requested_at, entry)


def _triage(submission: ClaimedSubmission, forms: FormReader, settings: Settings) -> Outcome | _Ready:
    """Spam, an unknown form, a screened entry or one without contact details end here, kept and flagged."""
    if submission.source in PHONE_SOURCES:
        return _triage_phone(submission)
    meta = EntryMeta.model_validate(submission.payload)
    if meta.status in GF_NOT_A_PERSON and not submission.released:
        submission.state = SubmissionState.SPAM
        return Outcome(SubmissionState.SPAM)
    fields = forms.applicant_fields(submission)
    if fields is None:
        return _flag(
            submission,
            f"unknown_form: form {submission.form_id} is not registered for site {submission.site}; run "
            "`admitflow forms add FORM.json` and it is processed automatically",
        )
    reason = None if submission.released else screen(fields)
    if reason is not None:
        return _screened(submission, reason)
    applicant = normalized_applicant(fields, meta, settings.phone_default_region)
    unparsed = phone_unparsed(fields, applicant)
    if applicant.phone is None and applicant.email is None and not unparsed:
        return _flag(
            submission,
            "no_contact: neither a valid phone number nor a valid email; review it with "
            f"`admitflow submissions show {submission.id} --reveal`",
        )
    requested_at = meta.date_created or submission.received_at
    call_at = requested_call_time(fields.best_time, requested_at, ZoneInfo(settings.center_timezone))
    return _Ready(submission, applicant, requested_at, call_at or requested_at, phone_unparsed=unparsed)


# A submission still waiting this long after it came in is queued behind others (the web hands a page on within
# 50 ms; a burst or a restart's backlog queues longer): a page being processed takes it along rather than leave it
# to its own turn. Older ones are the sweeper's.
WAITING_AFTER = timedelta(seconds=0.25)
WAITING_AT_MOST = timedelta(minutes=10)


def lock_page(session: Session, submission_ids: list[int], size: int) -> list[int]:
    """The submissions of `submission_ids` still to process, topped up to `size` with others waiting, each row locked
    for this transaction. A row another transaction holds is left to it (it is processing that row now), so two
    pages never wait on each other's rows."""
    now = utcnow()
    given = among(session, Submission.id, submission_ids)
    waiting = given | Submission.received_at.between(now - WAITING_AT_MOST, now - WAITING_AFTER)
    return list(session.scalars(
        select(Submission.id)
        .where(Submission.state == SubmissionState.RECEIVED, waiting)
        .order_by(given.desc(), Submission.id)
        .limit(max(size, len(submission_ids)))
        .with_for_update(skip_locked=True)
    ))


def process_submission(session: Session, submission_id: int, settings: Settings) -> Outcome:
    """Assign the submission to a lead and write the outbox rows for CRM sync and the staff alert.

    Safe to run any number of times: only a submission still in `received` is touched, and the row is locked
    first, so two workers racing on it do the work once. The caller commits, then dispatches `outbox_ids`.
    """
    return process_submissions(session, [submission_id], settings)[0]


def process_submissions(session: Session, submission_ids: list[int], settings: Settings) -> list[Outcome]:
    """`process_submission` for many submissions in one transaction (a page of history), with a few queries
    for all of them: their phones, emails and devices are locked at once, they are assigned to leads in the
    order the people sent them, and the page's new leads, outbox rows and submission updates are written with one
    statement each. One outcome per id, in the order given."""
    outcomes = {submission_id: Outcome(None) for submission_id in submission_ids}
    page = claim(session, submission_ids)
    if not page:
        return list(outcomes.values())
    forms = FormReader(session, settings)
    ready: list[_Ready] = []
    for submission in page:
        triaged = _triage(submission, forms, settings)
        if isinstance(triaged, Outcome):
            outcomes[submission.id] = triaged
        else:
            ready.append(triaged)
    if ready:
        outcomes.update(_assign_all(session, ready, settings, forms))
    update_submissions(session, page, [
        survivor(session, submission.lead).id if submission.lead is not None else submission.lead_id
        for submission in page
    ])
    return [outcomes[submission_id] for submission_id in submission_ids]


class _PageRows:
    """The outbox rows a page decided, written once it is decided: the checks for a recent alert or reply look
    here as well as in the database, as they would at rows written one by one."""

    def __init__(self, session: Session, ready: list[_Ready]) -> None:
        self.session, self.ready = session, ready
        self.rows: list[tuple[OutboxKind, Lead, ClaimedSubmission]] = []
        self._stored_alerts: dict[str, list[str | None]] | None = None

    def add(self, kinds: list[OutboxKind], lead: Lead, submission: ClaimedSubmission) -> None:
        self.rows.extend((kind, lead, submission) for kind in kinds)

    def has(self, kind: OutboxKind, lead: Lead) -> bool:
        """Whether this page decided a row of this kind for the lead (or for a lead merged into it since)."""
        return any(row_kind == kind and survivor(self.session, row_lead) is lead
                   for row_kind, row_lead, _ in self.rows)

    def alert_reasons_from(self, devices: tuple[str, ...]) -> list[str | None]:
        """The flag reasons of this page's submissions from the device that were given a staff alert."""
        return [submission.flag_reason for kind, _, submission in self.rows
                if kind == OutboxKind.STAFF_ALERT and submission.device_index in devices]

    def stored_alert_reasons(self, devices: tuple[str, ...]) -> list[str | None]:
        """The flag reasons of stored submissions from the device given a staff alert within the flood window. Read
        for every device of the page at once, the first time one is asked: the page holds the devices' locks, so
        no other transaction adds to them meanwhile."""
        if self._stored_alerts is None:
            vault = current_vault()
            every = {digest for item in self.ready if item.applicant.device
                     for digest in vault.blind_indexes("device", item.applicant.device)}
            self._stored_alerts = {}
            for device, reason in self.session.execute(
                select(Submission.device_index, Submission.flag_reason)
                .join(OutboxMessage, OutboxMessage.submission_id == Submission.id)
                .where(
                    among(self.session, Submission.device_index, every),
                    OutboxMessage.kind == OutboxKind.STAFF_ALERT,
                    OutboxMessage.created_at >= utcnow() - SOURCE_FLOOD_WINDOW,
                )
            ):
                if device is not None:
                    self._stored_alerts.setdefault(device, []).append(reason)
        return [reason for device in devices for reason in self._stored_alerts.get(device, [])]

    def write(self) -> dict[int, list[int]]:
        """Insert the rows, each for its lead's survivor (as a merge moves pending rows); their ids by submission."""
        ids = insert_outbox(self.session, [
            NewOutboxRow(kind, survivor(self.session, lead).id, submission.id) for kind, lead, submission in self.rows
        ])
        by_submission: dict[int, list[int]] = {}
        for (_, _, submission), outbox_id in zip(self.rows, ids, strict=True):
            by_submission.setdefault(submission.id, []).append(outbox_id)
        return by_submission


def _assign_all(session: Session, ready: list[_Ready], settings: Settings, forms: FormReader
                ) -> dict[int, Outcome]:
    """Each ready submission's lead (found or created) and outbox rows, decided in the order the people sent them,
    then written."""
    in_time_order = sorted(ready, key=lambda item: (item.requested_at, item.submission.id))
    dedup = Deduplicator(
        session, current_vault(),
        window=timedelta(days=settings.dedup_window_days),
        correction_window=timedelta(minutes=settings.correction_window_minutes),
        earliest=in_time_order[0].requested_at,
        latest=in_time_order[-1].requested_at,
        first_name_of=forms.first_name,
    )
    dedup.prepare([item.applicant for item in in_time_order])
    page = _PageRows(session, in_time_order)
    decided = []
    for item in in_time_order:
        submission, applicant = item.submission, item.applicant
        submission.requested_at, submission.call_from = item.requested_at, item.call_from
        assignment = dedup.assign(applicant, at=item.requested_at)
        lead, created = assignment.lead, assignment.created
        submission.device_index = dedup.assigned(applicant, item.requested_at, lead)
        submission.state, submission.lead, submission.is_repeat = SubmissionState.PROCESSED, lead, not created
        submission.flag_reason = PHONE_UNPARSED if item.phone_unparsed else None
        submission.match_evidence = assignment.evidence
        kinds = _outbox_kinds(session, item, lead, created, settings, page)
        if assignment.crm_follow_up:
            kinds.append(OutboxKind.CRM_CORRECT)  # two leads with CRM records became one: the CRM follows
        page.add(kinds, lead, submission)
        decided.append((submission.id, lead, created))
    dedup.finish()
    outbox_ids = page.write()
    return {submission_id: Outcome(SubmissionState.PROCESSED, lead.id, created, outbox_ids.get(submission_id, []))
            for submission_id, lead, created in decided}


def _outbox_kinds(session: Session, item: _Ready, lead: Lead, created: bool, settings: Settings, page: _PageRows
                  ) -> list[OutboxKind]:
    """What must be sent about this submission: always the CRM sync; the staff alert and the person's
    acknowledgement unless it is old history, a repeat staff heard about moments ago, or part of a flood."""
    kinds = [OutboxKind.CRM_SYNC]
    current = not _too_old_to_alert(item.submission, item.requested_at, settings)
    if (
        current
        and (created or _staff_should_hear_again(session, lead, settings, page))
        and _alert_or_coalesce(item.submission, item.applicant.device, settings, page)
    ):
        kinds.append(OutboxKind.STAFF_ALERT)
    if current and created and settings.person_ack_sms and lead.consent_to_text and lead.phone:
        kinds.append(OutboxKind.PERSON_ACK)
    if item.phone is not None and item.phone.form_id == TEXT_FORM and settings.sms_auto_reply and lead.phone \
            and not _replied_lately(session, lead, page):
        kinds.append(OutboxKind.PERSON_ACK)
    if item.phone is not None and item.phone.form_id == CALL_FORM and _left_voicemail(session, item.submission):
        kinds.append(OutboxKind.CRM_VOICEMAIL)
    return kinds


def _left_voicemail(session: Session, submission: ClaimedSubmission) -> bool:
    """Whether the call has a recording yet. One that comes later gets its note then (worker/staff/phone_line.py);
    this transaction holds the submission's row lock, which that step takes too, so one of them sees it."""
    return session.scalar(select(PhoneCall.id).where(
        PhoneCall.submission_id == submission.id, PhoneCall.recording_sid.is_not(None))) is not None


def _replied_lately(session: Session, lead: Lead, page: _PageRows) -> bool:
    """Whether the person had an automatic reply within a day: one conversation gets one, not one per text."""
    if page.has(OutboxKind.PERSON_ACK, lead):
        return True
    if lead.id is None:
        return False
    return session.scalar(select(OutboxMessage.id).where(
        OutboxMessage.lead_id == lead.id, OutboxMessage.kind == OutboxKind.PERSON_ACK,
        OutboxMessage.created_at >= utcnow() - AUTO_REPLY_EVERY,
    ).limit(1)) is not None

"""The admissions data model. Columns typed `EncryptedText`/`EncryptedJSON` hold PHI and are encrypted at rest."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worker.store.db import Base, EncryptedJSON, EncryptedText, UTCDateTime, utcnow


class SubmissionState(enum.StrEnum):
    RECEIVED = "received"  # stored, not yet turned into a lead
    PROCESSED = "processed"  # belongs to a lead
    FLAGGED = "flagged"  # kept for an operator: cannot become a lead as it is (see `flag_reason`)
    SPAM = "spam"  # Gravity Forms marked it spam or trash: kept, never alerted


class SubmissionSource(enum.StrEnum):
    WEBHOOK = "webhook"
    POLL = "poll"
    CLI = "cli"
    BACKFILL = "backfill"
    CALL = "call"  # a call to the center's number that no one took (worker/staff/phone_line.py)
    SMS = "sms"  # a text to the center's number from someone who is not staff (worker/staff/inbound_texts.py)


class LeadStatus(enum.StrEnum):
    NEW = "new"
    CLAIMED = "claimed"
    MERGED = "merged"  # found to be the same person as `merged_into`; its submissions moved there


class OutboxKind(enum.StrEnum):
    CRM_SYNC = "crm_sync"
    STAFF_ALERT = "staff_alert"
    CRM_ASSIGN = "crm_assign"  # give the callback task to the staff member who claimed the lead
    CRM_CALL_LOG = "crm_call_log"  # log a bridged call that reached the person and complete the task
    PERSON_ACK = "person_ack"  # the PHI-free "we received your request" text to a person who consented
    CRM_VOICEMAIL = "crm_voicemail"  # a missed call's voicemail (link, transcription) as a note on the contact
    CRM_CORRECT = "crm_correct"  # bring the CRM in line with a merge or split (the lead's pending `CrmCorrection`s)


class OutboxState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"  # gave up: `last_error` says why and what to do
    DROPPED = "dropped"  # an operator decided it must not be delivered


class FormDefinition(Base):
    """A Gravity Forms form object as its REST API returns it: the field types tell what each entry value means."""

    __tablename__ = "form_definitions"
    __table_args__ = (UniqueConstraint("site", "form_id", name="uq_form_site_form"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    form_id: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(255))
    definition: Mapped[Any] = mapped_column(JSON)  # form structure only, no entry data
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Lead(Base):
    """One person asking for a callback, however many times and ways they submitted."""

    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(16), unique=True)
    first_name: Mapped[str | None] = mapped_column(EncryptedText)
    last_name: Mapped[str | None] = mapped_column(EncryptedText)
    phone: Mapped[str | None] = mapped_column(EncryptedText)  # E.164
    email: Mapped[str | None] = mapped_column(EncryptedText)
    phone_index: Mapped[str | None] = mapped_column(String(64), index=True)
    email_index: Mapped[str | None] = mapped_column(String(64), index=True)
    consent_to_text: Mapped[bool | None]
    consent: Mapped[bool | None]  # the form's "OK to contact me" box
    # Every first name this person has written (a nickname one time, the full name the next); None while the first
    # name is the only one (read both through `worker.leads.dedup.lead_first_names`).
    known_first_names: Mapped[Any] = mapped_column(EncryptedJSON, nullable=True)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    # An operator split this lead's request out of that lead (`admitflow leads split`): dedup never merges them.
    split_from_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    # "high" once the person asked again within hours: a signal that they are waiting.
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    status: Mapped[str] = mapped_column(String(16), default=LeadStatus.NEW)
    repeat_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_request_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    crm_contact_id: Mapped[str | None] = mapped_column(String(64))
    crm_task_id: Mapped[str | None] = mapped_column(String(64))
    # One CRM sync per lead at a time, so concurrent requests from one person cannot create two contacts or tasks.
    crm_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    submissions: Mapped[list[Submission]] = relationship(back_populates="lead", order_by="Submission.id")


class LeadKey(Base):
    """One row per blind-indexed phone or email ever seen.

    Dedup locks these rows before it reads leads, so two workers handling the same person at the same moment
    are serialized by the database and the second one finds the lead the first one created.
    """

    __tablename__ = "lead_keys"

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)


class Submission(Base):
    """A form entry exactly as received, whichever door it came through."""

    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("site", "form_id", "entry_id", name="uq_submission_entry"),
        Index("ix_submissions_state_received", "state", "received_at"),
        Index("ix_submissions_received_offered", "offered_at", postgresql_where=text("state = 'received'"),
              sqlite_where=text("state = 'received'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    form_id: Mapped[str] = mapped_column(String(32))
    entry_id: Mapped[str] = mapped_column(String(64))  # a Gravity Forms entry id, or a Twilio CallSid/MessageSid
    source: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When it was last handed to the broker for processing (stored, or re-offered by the sweeper).
    offered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())
    payload: Mapped[Any] = mapped_column(EncryptedJSON)
    state: Mapped[str] = mapped_column(String(16), default=SubmissionState.RECEIVED)
    flag_reason: Mapped[str | None] = mapped_column(String(255))  # never PHI: a code and an instruction
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_repeat: Mapped[bool] = mapped_column(default=False)
    # Keyed digest of the sender's IP and user agent: evidence that two entries came from one device.
    device_index: Mapped[str | None] = mapped_column(String(64), index=True)
    # When the person submitted (the entry's date_created; received_at when it has none).
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # From when the person asked to be called, read from their best-time answer at processing: the time they
    # asked for, or `requested_at` when they asked for none (as soon as possible). None until processed, and for
    # submissions processed before revision 0011 (read from the form when needed).
    call_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An operator released it from screening: it is processed as a person even if the screen would flag it.
    released: Mapped[bool] = mapped_column(default=False)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    crm_note_id: Mapped[str | None] = mapped_column(String(64))
    # How dedup decided its lead: each candidate's agreement levels, score and verdict (worker/leads/evidence.py).
    # Never PHI: levels, scores and lead references only.
    match_evidence: Mapped[Any] = mapped_column(JSON, nullable=True)

    lead: Mapped[Lead | None] = relationship(back_populates="submissions")


class OutboxMessage(Base):
    """Work decided in the same transaction as the lead change that caused it: a CRM sync or a staff alert."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("kind", "submission_id", name="uq_outbox_kind_submission"),
        Index("ix_outbox_state_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"))
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)  # every attempt, never given back
    # The retry budget: attempts in a row that made no progress (a step that went through sets it back to 0; a
    # 429, a busy lead or a wait for a search index does not count).
    fruitless: Mapped[int] = mapped_column(default=0)
    progressed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # "May a first attempt have gone through?": the create (contact, note, task, call, ack) sent without an answer
    # yet, set before the vendor call and cleared only when its answer, or a look-up, tells (docs/idempotency.md).
    unanswered: Mapped[str | None] = mapped_column(String(16))
    unanswered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_ref: Mapped[str | None] = mapped_column(String(64))  # the vendor's id for what the row made (a sid)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When it was last handed to the broker (written, or re-offered by the sweeper).
    offered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(Text)  # never PHI
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    lead: Mapped[Lead] = relationship()


class CrmCorrectionKind(enum.StrEnum):
    MERGE = "merge"  # merge `other_lead`'s CRM record into the lead's
    REMOVE_NOTE = "remove_note"  # a request split off to another lead: its note leaves this lead's record


class CrmCorrection(Base):
    """CRM work a merge or split left for the lead's record, done by its `crm_correct` outbox row."""

    __tablename__ = "crm_corrections"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    other_lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    note_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the CRM did, or what a person must still do there. Never PHI: CRM ids and lead references.
    outcome: Mapped[str | None] = mapped_column(String(255))


class StaffAlert(Base):
    """One outbound message to a staff member, with the provider's id and outcome."""

    __tablename__ = "staff_alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), index=True)
    staff_name: Mapped[str] = mapped_column(String(128))
    staff_phone: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(8), default="sms")
    body: Mapped[str] = mapped_column(Text)  # PHI-free by construction (worker/staff/alerts.py)
    provider_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(24))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Which escalation step sent it ("claim-2", "callback-1-0"): a retry of that step looks for it at Twilio.
    escalation_step: Mapped[str | None] = mapped_column(String(32))


class PollCursor(Base):
    """Where polling one form of one site has got to, and whether it is healthy."""

    __tablename__ = "poll_cursors"
    __table_args__ = (UniqueConstraint("site", "form_id", name="uq_poll_cursor_site_form"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    form_id: Mapped[str] = mapped_column(String(32))
    # The newest `date_created` seen; each poll reads back to this minus the overlap window.
    cursor: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_poll_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)  # never PHI
    entries_seen: Mapped[int] = mapped_column(default=0)
    entries_new: Mapped[int] = mapped_column(default=0)


class BackfillRun(Base):
    """An import of a form's history; resumable from `next_page`."""

    __tablename__ = "backfill_runs"
    __table_args__ = (UniqueConstraint("site", "form_id", "since", name="uq_backfill_site_form_since"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    form_id: Mapped[str] = mapped_column(String(32))
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    next_page: Mapped[int] = mapped_column(default=1)
    imported: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Claim(Base):
    """Who took a lead's callback and how fast: the speed-to-lead record. One per lead; the first claim wins."""

    __tablename__ = "claims"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), unique=True)
    staff_id: Mapped[str] = mapped_column(String(32))
    staff_name: Mapped[str] = mapped_column(String(128))
    staff_phone: Mapped[str] = mapped_column(String(20))
    crm_owner_id: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(8))  # "sms" (a reply) or "voice" (pressed 1 on a reminder call)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_alert_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The call that bridged the staff member to the person (Twilio's <Dial> outcome).
    bridge_call_sid: Mapped[str | None] = mapped_column(String(64))
    bridge_status: Mapped[str | None] = mapped_column(String(24))
    bridge_seconds: Mapped[int | None]
    bridged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TimerPurpose(enum.StrEnum):
    CLAIM = "claim"
    CALLBACK = "callback"


class TimerState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"  # claimed (and, for a callback, connected or out of attempts)


class EscalationTimer(Base):
    """The next reminder or escalation step due for an unclaimed lead. A row with a due time that a beat task
    picks up, never a Celery countdown, so a restart or a broker wipe cannot lose it."""

    __tablename__ = "escalation_timers"
    __table_args__ = (Index("ix_escalation_timers_state_due", "state", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), unique=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"))  # the staff alert that started it
    # "claim": reminding and escalating until someone claims. "callback": the claimer's bridged call did not reach
    # the person, and they are called back to try again on the CALLBACK_CADENCE.
    purpose: Mapped[str] = mapped_column(String(16), default=TimerPurpose.CLAIM)
    step: Mapped[int] = mapped_column(default=0)  # claim: 0 calls the on-call person, n texts and calls rung n
    callback_attempts: Mapped[int] = mapped_column(default=0)  # bridged calls that did not reach the person
    state: Mapped[str] = mapped_column(String(16), default=TimerState.PENDING)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The texts and calls of the last step: a failure reported for one of them makes the timer due at once.
    waiting_sms_sid: Mapped[str | None] = mapped_column(String(64))
    waiting_call_sid: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)  # never PHI
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Twilio's status callbacks find the alert they are about by its provider id.
Index("ix_staff_alerts_provider_id", StaffAlert.provider_id)


class SeenWebhook(Base):
    """A signed webhook's `webhook-id`, kept for twice the signature tolerance so a replay is refused."""

    __tablename__ = "seen_webhooks"
    __table_args__ = (UniqueConstraint("site", "webhook_id", name="uq_seen_webhook_site_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    webhook_id: Mapped[str] = mapped_column(String(255))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class AuditEvent(Base):
    """Who or what read, exported, claimed, changed or purged which lead or submission, and when. Append-only
    (the database refuses updates and deletes); never PHI: references, ids and counts only."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_kind: Mapped[str] = mapped_column(String(16))  # operator, system or staff
    actor: Mapped[str] = mapped_column(String(64))  # an OS user name, a staff id, or the component
    action: Mapped[str] = mapped_column(String(16))
    lead_ref: Mapped[str | None] = mapped_column(String(16), index=True)
    submission_id: Mapped[int | None]
    outbox_id: Mapped[int | None]
    detail: Mapped[str | None] = mapped_column(String(255))  # never PHI: counts, states, a reason code


class PayloadPurge(Base):
    """A submission whose raw entry retention replaced with a stub (`worker/trust/retention.py`)."""

    __tablename__ = "payload_purges"

    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), primary_key=True)
    purged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Heartbeat(Base):
    """The last run of a routine task beat schedules (its own heartbeat, the sweep, polling, escalation), with how
    many runs and items: how /healthz, `admitflow health beat` and /metrics tell that beat and the workers live."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    runs: Mapped[int] = mapped_column(BigInteger, default=0)
    items: Mapped[int] = mapped_column(BigInteger, default=0)  # what the runs found: re-dispatched rows, entries


class LiveWorker(Base):
    """A worker process's main process, renewing `alive_until` while it lives (worker/store/leases.py)."""

    __tablename__ = "live_workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # host:pid
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    alive_until: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookRejection(Base):
    """Webhooks refused, counted by door, status and reason code (nothing of the request is kept)."""

    __tablename__ = "webhook_rejections"

    door: Mapped[str] = mapped_column(String(16), primary_key=True)  # gravityforms or twilio
    status: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)
class CallState(enum.StrEnum):
    RINGING = "ringing"  # staff are being rung, each hearing the whisper
    CONNECTED = "connected"  # a staff member pressed 1 and took the call
    VOICEMAIL = "voicemail"  # nobody took it: the caller hears the voicemail prompt or is recording
    ENDED = "ended"


class CallOutcome(enum.StrEnum):
    ANSWERED = "answered"  # taken live by a staff member
    MISSED = "missed"  # rang every staff member it was to ring, and nobody took it
    ABANDONED = "abandoned"  # the caller hung up while staff were being rung
    AFTER_HOURS = "after_hours"  # no shift on: straight to voicemail
    NOT_RUNG = "not_rung"  # VOICE_INBOUND=voicemail (or off): straight to voicemail


class PhoneCall(Base):
    """One inbound call to the center's number and where it is in the call flow. Twilio asks for each step's
    TwiML by this row's id, so a call in flight carries on across a restart of the web server."""

    __tablename__ = "phone_calls"
    __table_args__ = (Index("ix_phone_calls_state_updated", "state", "updated_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)  # Twilio's CallSid of the inbound call
    site: Mapped[str] = mapped_column(String(64))
    caller: Mapped[str | None] = mapped_column(EncryptedText)  # E.164; None when the caller withheld their number
    state: Mapped[str] = mapped_column(String(16), default=CallState.RINGING)
    outcome: Mapped[str | None] = mapped_column(String(16))
    ring_order: Mapped[str] = mapped_column(String(16), default="simultaneous")
    ring_step: Mapped[int] = mapped_column(default=0)  # ladder order: the rung being rung now
    staff_ids: Mapped[Any] = mapped_column(JSON, default=list)  # who is rung, in ladder order (ids, not PHI)
    answered_by: Mapped[str | None] = mapped_column(String(32))  # the staff id who pressed 1
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voicemail_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # ringing over: the voicemail prompt began
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The voicemail stays at Twilio; its address and Twilio's transcription (if VOICE_TRANSCRIBE) are PHI.
    recording_sid: Mapped[str | None] = mapped_column(String(64))
    recording_url: Mapped[str | None] = mapped_column(EncryptedText)
    recording_seconds: Mapped[int | None]
    transcription: Mapped[str | None] = mapped_column(EncryptedText)
    transcription_status: Mapped[str | None] = mapped_column(String(16))
    # The submission a missed call became (through the intake door, entry id = CallSid).
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id"), index=True)

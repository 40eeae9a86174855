from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text, update
from sqlalchemy.exc import DatabaseError

from config.settings import Settings
from tests.conftest import EXAMPLES
from tests.fakes.admissions import alert_services, twilio_settings
from worker.delivery.outbox import deliver
from worker.intake.phone_entries import PhoneEntry
from worker.leads.processing import process_submission
from worker.staff.phone_line import answer_call, transcription_ready, voicemail_recorded
from worker.store.db import session_scope, utcnow
from worker.store.models import (
    AuditEvent,
    Lead,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    PhoneCall,
    Submission,
    SubmissionState,
)
from worker.trust.retention import purged_stub

FORM = str(EXAMPLES / "form.json")
ENTRIES = str(EXAMPLES / "entries.json")


def run(*args: str) -> str:
    from worker.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def age_everything(days: int) -> None:
    with session_scope() as session:
        session.execute(update(Submission).values(received_at=utcnow() - timedelta(days=days)))


def audit_rows() -> list[tuple[str, str, str | None]]:
    with session_scope() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(event.actor_kind, event.action, event.lead_ref) for event in events]


def test_exporting_leads_is_audited_before_and_after_with_the_count_and_no_phi(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)
    exported = run("leads", "export")

    with session_scope() as session:
        started, finished = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        assert (started.actor_kind, started.action, started.detail) == (
            "operator", "export", "export of 2 leads to stdout started")
        assert (finished.action, finished.detail) == ("export", "2 of 2 leads exported")
        assert started.actor
    first = json.loads(exported.splitlines()[0])
    assert first["email"] not in run("audit")


def test_revealing_releasing_retrying_and_dropping_are_audited(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)
    with session_scope() as session:
        processed = session.scalars(select(Submission).where(Submission.lead_id.is_not(None))).first()
        flagged = session.scalars(select(Submission).where(Submission.state == SubmissionState.FLAGGED)).first()
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        rows[0].state = rows[1].state = OutboxState.DEAD
        assert processed and flagged and processed.lead
        ref, first, second = processed.lead.ref, rows[0].id, rows[1].id
        processed_id, flagged_id = processed.id, flagged.id

    run("submissions", "show", str(processed_id))
    run("submissions", "show", str(processed_id), "--reveal")
    from worker.cli import main

    released = CliRunner().invoke(main, ["submissions", "release", str(flagged_id)])
    assert released.exit_code == 1 and "flagged again: no_contact" in released.stdout
    run("outbox", "retry", str(first))
    run("outbox", "drop", str(second))

    actions = [(kind, action) for kind, action, _ in audit_rows()]
    assert actions[:4] == [("operator", "read"), ("operator", "release"), ("operator", "retry"), ("operator", "drop")]
    assert audit_rows()[0][2] == ref


def test_audit_lists_one_leads_events_and_events_since_a_date(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)
    with session_scope() as session:
        sub = session.scalars(select(Submission).where(Submission.lead_id.is_not(None))).first()
        assert sub and sub.lead
        sub_id, ref = sub.id, sub.lead.ref
    run("submissions", "show", str(sub_id), "--reveal")
    run("leads", "export")

    header, *rows = run("audit", "--lead", ref).splitlines()
    assert header.split() == ["WHEN", "WHO", "ACTION", "LEAD", "SUBMISSION", "OUTBOX", "DETAIL"]
    assert len(rows) == 1 and rows[0].split()[2:5] == ["read", ref, str(sub_id)]
    assert len(run("audit", "--since", "2000-01-01").splitlines()) == 1 + 3  # a read, an export's start and end
    assert run("audit", "--since", "2999-01-01") == ""


def test_a_claim_is_audited_with_the_staff_member(settings: Settings) -> None:
    from worker.staff.claims import claim_lead
    from worker.staff.roster import StaffMember

    run("ingest", "--form", FORM, ENTRIES)
    with session_scope() as session:
        lead = session.scalars(select(Lead)).first()
        assert lead
        staff = StaffMember(id="s-ana", name="Ana Example", phone="+16175550101")
        claim_lead(session, lead.id, staff, "sms", utcnow())
        ref = lead.ref
    assert audit_rows() == [("staff", "claim", ref)]


def test_the_audit_trail_cannot_be_changed_or_deleted(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)
    run("leads", "export")
    for statement in ("UPDATE audit_events SET actor = 'someone else'", "DELETE FROM audit_events"):
        with pytest.raises(DatabaseError, match="append-only"), session_scope() as session:
            session.execute(text(statement))
    assert len(audit_rows()) == 2  # the export's start and end


def test_purge_dry_run_prints_counts_and_changes_nothing(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)
    age_everything(100)

    output = run("purge", "--dry-run")

    assert "older than 90 days: 3 raw entries to purge, 0 kept" in output
    with session_scope() as session:
        assert all(not s.payload.get("purged") for s in session.scalars(select(Submission)))
    assert audit_rows() == []


def test_purge_replaces_old_delivered_entries_with_a_stub_and_audits_each(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)
    age_everything(100)

    assert "purged 3 raw entries" in run("purge")

    with session_scope() as session:
        for sub in session.scalars(select(Submission)):
            if sub.lead_id is not None:
                assert sub.payload == purged_stub(sub) == {"id": sub.entry_id, "form_id": sub.form_id, "purged": True}
            else:  # flagged and spam entries never became a lead: kept for an operator
                assert "purged" not in sub.payload
    assert [action for _, action, _ in audit_rows()] == ["purge"] * 3
    assert "purged 0 raw entries" in run("purge")


def test_purge_never_touches_a_lead_whose_crm_sync_is_not_delivered(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)
    age_everything(100)
    with session_scope() as session:
        row = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_SYNC)).first()
        assert row
        row.state = OutboxState.DEAD
        undelivered_lead = row.lead_id

    output = run("purge")

    assert "kept (their lead's CRM sync is not delivered)" in output
    with session_scope() as session:
        for sub in session.scalars(select(Submission).where(Submission.lead_id == undelivered_lead)):
            assert "purged" not in sub.payload


def test_recent_entries_are_not_purged(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)
    age_everything(30)

    assert "purged 0 raw entries" in run("purge")


def test_a_purged_lead_can_still_be_synced_to_the_crm_again(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)
    age_everything(100)
    run("purge")
    with session_scope() as session:
        row = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_SYNC)).first()
        assert row
        row.state = OutboxState.DEAD
        row_id = row.id

    run("outbox", "retry", str(row_id))

    with session_scope() as session:
        assert session.get_one(OutboxMessage, row_id).state == OutboxState.DELIVERED


def test_purging_a_missed_calls_entry_clears_the_callers_number_and_the_voicemail_on_its_call(
    settings: Settings,
) -> None:
    services = alert_services(twilio_settings(settings, voice_inbound="voicemail"))
    with session_scope() as session:
        answer_call(session, "CA" + "5" * 32, "+16175550165", services, utcnow())
        call = session.scalars(select(PhoneCall)).one()
        voicemail_recorded(session, call.id, ("RE" + "5" * 32, "https://api.twilio.com/x/RE5", 20), utcnow())
        transcription_ready(session, call.id, "please call me back", "completed", utcnow())
    with session_scope() as session:
        submission = session.scalars(select(Submission)).one()
        process_submission(session, submission.id, settings)
    with session_scope() as session:
        for row_id in session.scalars(select(OutboxMessage.id).where(OutboxMessage.kind == OutboxKind.CRM_SYNC)):
            deliver(session, row_id, services)
    age_everything(100)

    assert "purged 1 raw entries" in run("purge")

    with session_scope() as session:
        call = session.scalars(select(PhoneCall)).one()
        assert (call.caller, call.recording_url, call.transcription) == (None, None, None)
        assert call.recording_sid is not None, "the recording's id, no PHI, stays: an operator finds it at Twilio by it"
        PhoneEntry.model_validate(session.scalars(select(Submission.payload)).one())

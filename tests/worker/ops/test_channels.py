from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.fakes.admissions import alert_services
from tests.fakes.speed import alerted_lead, claimed_lead
from worker.cli import main
from worker.ops.channels import channel_report, format_channel_report
from worker.store.db import utcnow
from worker.store.models import CallOutcome, CallState, Lead, PhoneCall, Submission, SubmissionSource
from worker.web.app import create_app

NOW = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)  # 12:00 in New York
ZONE = "America/New_York"


def ended_call(session: Session, n: int, outcome: CallOutcome, started_at: datetime, *,
               lead: Lead | None = None, voicemail: bool = False) -> PhoneCall:
    """A call to the center's number that ended as `outcome`; a missed one holds `lead`'s call submission."""
    submission_id = None
    if lead is not None:
        submission_id = session.scalars(select(Submission.id).where(Submission.lead_id == lead.id)).first()
    call = PhoneCall(call_sid=f"CA{n:032x}", site="main", state=CallState.ENDED, outcome=outcome,
                     started_at=started_at, updated_at=started_at, ended_at=started_at + timedelta(seconds=40),
                     staff_ids=["avery"], recording_sid=f"RE{n:032x}" if voicemail else None,
                     submission_id=submission_id)
    session.add(call)
    session.flush()
    return call


def test_leads_requests_and_speed_are_counted_under_the_channel_of_each_leads_first_request(session: Session) -> None:
    claimed_lead(session, "R-FORM1", NOW - timedelta(hours=3), "Avery Example", claim_after=timedelta(minutes=2))
    alerted_lead(session, "R-FORM2", NOW - timedelta(hours=2))
    claimed_lead(session, "R-CALL1", NOW - timedelta(hours=1), "Blake Example", claim_after=timedelta(minutes=4),
                 call_after=timedelta(minutes=9), source=SubmissionSource.CALL)
    alerted_lead(session, "R-TEXT1", NOW - timedelta(minutes=30), source=SubmissionSource.SMS)
    session.commit()

    report = channel_report(session, days=14, now=NOW, timezone=ZONE)

    rows = {row.channel: row for row in report.channels}
    assert [row.channel for row in report.channels] == ["form", "call", "text"]
    assert {name: (row.leads, row.requests, row.speed.claims) for name, row in rows.items()} == {
        "form": (2, 2, 1), "call": (1, 1, 1), "text": (1, 1, 0)}
    assert (rows["call"].speed.claim_p50, rows["call"].speed.call_p50) == (240.0, 540.0)


def test_the_phone_line_counts_calls_by_outcome_voicemails_and_the_wait_from_a_missed_call_to_the_call_back(
    session: Session,
) -> None:
    reached = claimed_lead(session, "R-CALL2", NOW - timedelta(hours=2), "Avery Example",
                           claim_after=timedelta(minutes=1), call_after=timedelta(minutes=12),
                           source=SubmissionSource.CALL)
    ended_call(session, 1, CallOutcome.MISSED, NOW - timedelta(hours=2), lead=reached, voicemail=True)
    ended_call(session, 2, CallOutcome.ANSWERED, NOW - timedelta(hours=1))
    ended_call(session, 3, CallOutcome.ABANDONED, NOW - timedelta(minutes=50))
    ended_call(session, 4, CallOutcome.AFTER_HOURS, NOW - timedelta(hours=9), voicemail=True)
    ended_call(session, 5, CallOutcome.MISSED, NOW - timedelta(days=30))
    session.commit()

    line = channel_report(session, days=14, now=NOW, timezone=ZONE).line

    assert line.calls == {"answered": 1, "missed": 1, "abandoned": 1, "after_hours": 1, "not_rung": 0}
    assert (line.voicemails, line.callbacks, line.callback_p50) == (2, 1, 720.0)


def test_report_channels_prints_the_channels_and_the_phone_line(settings: Settings, session: Session) -> None:
    now = utcnow()
    reached = claimed_lead(session, "R-CALL3", now - timedelta(minutes=30), "Avery Example",
                           claim_after=timedelta(minutes=1), call_after=timedelta(minutes=3),
                           source=SubmissionSource.CALL)
    ended_call(session, 6, CallOutcome.ABANDONED, now - timedelta(minutes=30), lead=reached)
    session.commit()

    result = CliRunner().invoke(main, ["report", "channels", "--days", "7"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("by channel, last 7 days")
    assert any(line.split()[:3] == ["call", "1", "1"] for line in lines)
    assert "missed call to call back: 1 reached, median 3m00s" in result.stdout


def test_metrics_count_calls_by_outcome_voicemails_and_the_missed_call_to_call_back_wait(
    settings: Settings, session: Session
) -> None:
    reached = claimed_lead(session, "R-CALL4", NOW, "Avery Example", claim_after=timedelta(minutes=1),
                           call_after=timedelta(minutes=3), source=SubmissionSource.CALL)
    ended_call(session, 7, CallOutcome.MISSED, NOW, lead=reached, voicemail=True)
    ended_call(session, 8, CallOutcome.ANSWERED, NOW)
    session.commit()

    with TestClient(create_app(settings, alert_services(settings))) as client:
        families = {family.name: family for family in text_string_to_metric_families(client.get("/metrics").text)}

    calls = {sample.labels["outcome"]: sample.value for sample in families["admitflow_inbound_calls"].samples
             if sample.name == "admitflow_inbound_calls_total"}
    assert (calls["missed"], calls["answered"], calls["abandoned"]) == (1, 1, 0)
    assert [sample.value for sample in families["admitflow_voicemails"].samples
            if sample.name == "admitflow_voicemails_total"] == [1]
    waits = {sample.labels.get("le"): sample.value for sample in
             families["admitflow_missed_call_to_callback_seconds"].samples if sample.name.endswith("_bucket")}
    assert (waits["120.0"], waits["300.0"]) == (0, 1)


def test_the_status_page_shows_the_channels_and_the_phone_line(settings: Settings, session: Session) -> None:
    configured = settings.model_copy(update={"status_username": "manager",
                                             "status_password": SecretStr("correct-horse")})
    now = utcnow()
    alerted_lead(session, "R-TEXT2", now - timedelta(minutes=5), source=SubmissionSource.SMS)
    ended_call(session, 9, CallOutcome.ABANDONED, now - timedelta(minutes=3))
    session.commit()
    login = base64.b64encode(b"manager:correct-horse").decode()

    with TestClient(create_app(configured, alert_services(configured))) as client:
        page = client.get("/status", headers={"Authorization": f"Basic {login}"}).text

    assert '<table id="channels">' in page and "<td>text</td><td>1</td><td>1</td>" in page
    assert '<table id="phone-line">' in page and "<tr><td>0</td><td>0</td><td>1</td>" in page


def test_the_channel_report_says_nothing_about_who_called(session: Session) -> None:
    alerted_lead(session, "R-TEXT3", NOW - timedelta(minutes=5), source=SubmissionSource.SMS, phone="+16175550177")
    session.commit()

    text = format_channel_report(channel_report(session, days=14, now=NOW, timezone=ZONE))

    assert "5550177" not in text and "R-TEXT3" not in text

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.fakes.admissions import (
    AVERY,
    BLAKE,
    DANA,
    NEW_YORK,
    NoteRecordingCRM,
    new_lead,
    next_weekday_morning,
    twilio_settings,
)
from tests.fakes.rosters import days_only
from tests.fakes.twilio import CENTER_NUMBER, PUBLIC_URL, RecordingMessenger
from worker.delivery.outbox import deliver
from worker.leads.processing import process_submission
from worker.staff.claims import answer_sms
from worker.staff.phone_line import (
    ASK_FOR_NUMBER,
    DEFAULT_AFTER_HOURS_PROMPT,
    DEFAULT_MISSED_PROMPT,
    NO_VOICEMAIL,
    PUT_THROUGH,
    TAKEN_BY_ANOTHER,
    THANKS,
    WHISPER_PROMPT,
    LineAnswer,
    answer_call,
    call_ended,
    close_stale_calls,
    recording_ready,
    ring_ended,
    take_call,
    transcription_ready,
    voicemail_recorded,
    whisper_twiml,
)
from worker.staff.roster import load_roster
from worker.staff.services import Services
from worker.staff.templates import AlertTemplates
from worker.store.models import (
    CallOutcome,
    CallState,
    EscalationTimer,
    Lead,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    PhoneCall,
    Submission,
    SubmissionSource,
)

CALLER = "+16175550161"
CALL_SID = "CA" + "1" * 32
RECORDING = ("RE" + "2" * 32, "https://api.twilio.com/2010-04-01/Accounts/AC0/Recordings/RE" + "2" * 32, 42)
MORNING = next_weekday_morning()  # Monday 10:00 in New York: Avery on call, Blake second, Dana supervisor
NIGHT = MORNING + timedelta(hours=13)  # Monday 23:00: no shift, after hours


def parse(document: str) -> ET.Element:
    return ET.fromstring(document)  # noqa: S314 (our own TwiML)


def said(document: str) -> str:
    return " ".join(element.text or "" for element in parse(document).iter("Say"))


@dataclass
class Line:
    session: Session
    services: Services
    messenger: RecordingMessenger
    crm: NoteRecordingCRM

    def step(self, answer: LineAnswer) -> LineAnswer:
        """Commit a step as the web hook does, then process what it stored and deliver what is due."""
        self.session.commit()
        for submission_id in answer.submission_ids:
            process_submission(self.session, submission_id, self.services.settings)
            self.session.commit()
        return answer

    def deliver_due(self, now: datetime) -> None:
        for row_id in self.session.scalars(select(OutboxMessage.id).where(
                OutboxMessage.state == OutboxState.PENDING).order_by(OutboxMessage.id)).all():
            deliver(self.session, row_id, self.services, now=now, batches=False)

    def call(self, caller: str | None = CALLER, sid: str = CALL_SID, at: datetime = MORNING) -> LineAnswer:
        return self.step(answer_call(self.session, sid, caller, self.services, at))

    def ring_ended(self, dial_status: str = "no-answer", call_status: str = "in-progress", step: int | None = None,
                   at: datetime = MORNING + timedelta(seconds=20)) -> LineAnswer:
        row = self.row()
        return self.step(ring_ended(self.session, row.id, row.ring_step if step is None else step, dial_status,
                                    call_status, self.services, at))

    def row(self, sid: str = CALL_SID) -> PhoneCall:
        self.session.expire_all()
        return self.session.scalars(select(PhoneCall).where(PhoneCall.call_sid == sid)).one()

    def lead(self) -> Lead:
        return self.session.scalars(select(Lead)).one()

    def kinds(self) -> list[str]:
        return sorted(self.session.scalars(select(OutboxMessage.kind)).all())


@pytest.fixture
def line(session: Session, settings: Settings, tmp_path: Path) -> Line:
    return make_line(session, settings, tmp_path)


def make_line(session: Session, settings: Settings, tmp_path: Path, **overrides: Any) -> Line:
    roster_file = tmp_path / "roster.toml"
    roster_file.write_text(days_only("mon", "tue", "wed", "thu", "fri"), encoding="utf-8")
    configured = twilio_settings(settings, **{"voice_inbound": "ring", **overrides})
    messenger, crm = RecordingMessenger(), NoteRecordingCRM()
    services = Services(configured, crm, messenger, load_roster(roster_file, NEW_YORK), AlertTemplates())
    return Line(session, services, messenger, crm)


def test_a_call_in_hours_rings_everyone_on_the_ladder_at_once_each_through_the_whisper(line: Line) -> None:
    root = parse(line.call().twiml)

    row = line.row()
    [dial] = list(root)
    assert dial.tag == "Dial"
    assert dial.attrib == {"answerOnBridge": "true", "callerId": CENTER_NUMBER, "timeout": "20", "method": "POST",
                           "action": f"{PUBLIC_URL}/hooks/twilio/voice/inbound/ring-status?call={row.id}&step=0"}
    assert [(number.text, number.attrib["url"]) for number in dial] == [
        (phone, f"{PUBLIC_URL}/hooks/twilio/voice/inbound/whisper?call={row.id}&staff={staff}")
        for phone, staff in ((AVERY, "avery"), (BLAKE, "blake"), (DANA, "dana"))]
    assert (row.state, row.caller, row.staff_ids) == (CallState.RINGING, CALLER, ["avery", "blake", "dana"])
    assert CALLER not in ET.tostring(root, encoding="unicode")


def test_the_whisper_asks_to_press_1_and_a_leg_that_should_not_ring_is_hung_up(line: Line) -> None:
    line.call()
    row = line.row()

    whisper = parse(whisper_twiml(line.session, row.id, "blake", line.services.settings))

    gather = whisper.find("Gather")
    assert gather is not None and gather.attrib["numDigits"] == "1"
    assert gather.attrib["action"] == f"{PUBLIC_URL}/hooks/twilio/voice/inbound/whisper-key?call={row.id}&staff=blake"
    assert [say.text for say in gather.findall("Say")] == [WHISPER_PROMPT, WHISPER_PROMPT]
    assert [child.tag for child in whisper][-1] == "Hangup", "no key (a staff voicemail) hangs up this leg"
    assert [child.tag for child in parse(whisper_twiml(line.session, row.id, "casey", line.services.settings))] == [
        "Hangup"]


def test_the_first_staff_member_to_press_1_takes_the_call_and_another_is_told_it_is_taken(line: Line) -> None:
    line.call()
    row = line.row()

    first = take_call(line.session, row.id, "blake", "1", MORNING)
    second = take_call(line.session, row.id, "avery", "1", MORNING)
    again = take_call(line.session, row.id, "blake", "1", MORNING)
    line.session.commit()

    assert [(child.tag, child.text) for child in parse(first)] == [("Say", PUT_THROUGH)]
    assert said(second) == TAKEN_BY_ANOTHER and parse(second)[-1].tag == "Hangup"
    assert parse(again)[0].text == PUT_THROUGH, "Twilio repeating the key press gets the same answer"
    assert [child.tag for child in parse(take_call(line.session, row.id, "avery", "2", MORNING))] == ["Hangup"]
    ended = line.ring_ended(dial_status="completed", call_status="completed")
    assert [child.tag for child in parse(ended.twiml)] == ["Hangup"] and ended.submission_ids == []
    row = line.row()
    assert (row.state, row.outcome, row.answered_by) == (CallState.ENDED, CallOutcome.ANSWERED, "blake")
    assert line.session.scalars(select(Submission)).all() == [], "a call staff took is no lead"


def test_in_ladder_order_each_rung_rings_in_turn_and_then_the_caller_hears_voicemail(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    line = make_line(session, settings, tmp_path, voice_ring_order="ladder")

    rung = [[number.text for number in parse(line.call().twiml).iter("Number")]]
    rung.append([number.text for number in parse(line.ring_ended().twiml).iter("Number")])
    repeated = line.ring_ended(step=0)
    rung.append([number.text for number in parse(line.ring_ended().twiml).iter("Number")])
    voicemail = parse(line.ring_ended().twiml)

    assert rung == [[AVERY], [BLAKE], [DANA]]
    assert [number.text for number in parse(repeated.twiml).iter("Number")] == [BLAKE], \
        "a repeated request for a rung already passed gets the current one"
    assert [child.tag for child in voicemail] == ["Say", "Record", "Say", "Hangup"]
    assert line.row().outcome == CallOutcome.MISSED


def test_a_call_nobody_takes_goes_to_voicemail_and_becomes_a_lead_with_a_crm_note_for_the_voicemail(
    line: Line,
) -> None:
    line.call()
    voicemail = parse(line.ring_ended().twiml)
    row = line.row()

    say, record = voicemail[0], voicemail[1]
    assert say.text == DEFAULT_MISSED_PROMPT
    assert record.attrib["action"] == f"{PUBLIC_URL}/hooks/twilio/voice/inbound/recorded?call={row.id}"
    assert record.attrib["recordingStatusCallback"] == f"{PUBLIC_URL}/hooks/twilio/voice/inbound/recording?call=" \
        f"{row.id}"
    assert (record.attrib["maxLength"], record.attrib["playBeep"]) == ("120", "true")
    assert "transcribe" not in record.attrib
    thanks = line.step(voicemail_recorded(line.session, row.id, RECORDING, MORNING + timedelta(seconds=70)))
    assert said(thanks.twiml) == THANKS and len(thanks.submission_ids) == 1

    lead = line.lead()
    assert (lead.phone, lead.first_name, lead.email) == (CALLER, None, None)
    assert line.kinds() == [OutboxKind.CRM_SYNC, OutboxKind.CRM_VOICEMAIL, OutboxKind.STAFF_ALERT]
    line.deliver_due(MORNING + timedelta(seconds=71))
    [(to, text)] = line.messenger.texts
    assert to == AVERY
    assert text.startswith(f"admitflow: MISSED CALL to the admissions line: callback request {lead.ref}")
    assert CALLER not in text and "5550161" not in text
    [(_, task)] = line.crm.tasks
    assert "a call to the admissions line" in task.body
    call_note, voicemail_note = (text for _, text in line.crm.notes)
    assert call_note.startswith(f"Missed call {lead.ref} (call {CALL_SID}):")
    assert "3 staff rung for 20 s, and nobody took the call" in call_note
    assert voicemail_note.startswith(f"Voicemail {lead.ref} (call {CALL_SID}):")
    assert f"42 s, kept at Twilio: {RECORDING[1]}" in voicemail_note
    assert line.session.scalars(select(Submission.source)).all() == [SubmissionSource.CALL]


def test_a_caller_who_hangs_up_while_it_rings_is_an_abandoned_call_and_a_lead(line: Line) -> None:
    line.call()

    stored = call_ended(line.session, CALL_SID, "completed", CALLER, line.services, MORNING + timedelta(seconds=8))
    line.step(LineAnswer("", stored))
    late = line.ring_ended(dial_status="no-answer", call_status="completed")

    row = line.row()
    assert (row.state, row.outcome, len(stored)) == (CallState.ENDED, CallOutcome.ABANDONED, 1)
    assert late.submission_ids == [] and [child.tag for child in parse(late.twiml)] == ["Hangup"]
    assert line.lead().phone == CALLER
    assert line.kinds() == [OutboxKind.CRM_SYNC, OutboxKind.STAFF_ALERT]
    line.deliver_due(MORNING + timedelta(seconds=9))
    assert "hung up after 8 s, while 3 staff were being rung" in line.crm.notes[0][1]


def test_a_withheld_number_is_a_lead_staff_are_told_about_with_nothing_to_claim_or_call_back(line: Line) -> None:
    line.call(caller="+266696687")
    voicemail = line.ring_ended().twiml
    row = line.row()
    assert row.caller is None
    assert said(voicemail).startswith(f"{DEFAULT_MISSED_PROMPT} {ASK_FOR_NUMBER}")

    line.step(voicemail_recorded(line.session, row.id, RECORDING, MORNING))
    line.deliver_due(MORNING + timedelta(seconds=1))

    lead = line.lead()
    assert (lead.phone, lead.email) == (None, None)
    [(to, text)] = line.messenger.texts
    assert to == AVERY
    assert text.startswith(f"admitflow: Missed call to the admissions line, number withheld ({lead.ref})")
    assert line.session.scalars(select(EscalationTimer)).all() == [], "nothing to remind anyone to call back"
    assert line.crm.tasks == [] and len(line.crm.notes) == 2
    assert "withheld their number" in line.crm.notes[0][1]
    reply = answer_sms(line.session, line.services.roster, AVERY, "1", MORNING)
    assert reply.text is not None and not reply.text.startswith("Claimed")


def test_after_hours_a_call_goes_straight_to_voicemail_and_its_lead_alerts_the_supervisor(line: Line) -> None:
    answer = parse(line.call(at=NIGHT).twiml)

    assert [child.tag for child in answer] == ["Say", "Record", "Say", "Hangup"]
    assert answer[0].text == DEFAULT_AFTER_HOURS_PROMPT
    row = line.row()
    assert (row.state, row.outcome, row.staff_ids) == (CallState.VOICEMAIL, CallOutcome.AFTER_HOURS, [])
    line.step(voicemail_recorded(line.session, row.id, RECORDING, NIGHT + timedelta(minutes=1)))
    line.deliver_due(NIGHT + timedelta(minutes=1))
    assert [to for to, _ in line.messenger.texts] == [DANA]
    assert "after hours, with nobody on shift" in line.crm.notes[0][1]


def test_with_voice_inbound_voicemail_every_call_goes_straight_to_voicemail(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    line = make_line(session, settings, tmp_path, voice_inbound="voicemail")

    answer = parse(line.call().twiml)

    assert answer.find("Dial") is None and answer.find("Record") is not None
    assert line.row().outcome == CallOutcome.NOT_RUNG


def test_without_voicemail_a_missed_caller_is_told_they_will_be_called_back_and_is_a_lead_at_once(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    line = make_line(session, settings, tmp_path, voice_voicemail=False)
    line.call()

    answer = line.ring_ended()

    assert said(answer.twiml) == NO_VOICEMAIL and len(answer.submission_ids) == 1
    assert line.lead().phone == CALLER
    assert OutboxKind.CRM_VOICEMAIL not in line.kinds()


def test_twilio_repeating_any_request_of_a_call_stores_it_once(line: Line) -> None:
    first = line.call().twiml
    assert line.call().twiml == first
    line.ring_ended()
    row = line.row()

    recorded = [line.step(voicemail_recorded(line.session, row.id, RECORDING, MORNING)) for _ in range(2)]
    ended = [line.step(LineAnswer("", call_ended(line.session, CALL_SID, "completed", CALLER, line.services,
                                                 MORNING))) for _ in range(2)]

    assert [len(answer.submission_ids) for answer in recorded + ended] == [1, 0, 0, 0]
    assert len(line.session.scalars(select(PhoneCall)).all()) == 1
    assert len(line.session.scalars(select(Lead)).all()) == 1


def test_a_recording_that_arrives_after_the_lead_still_gets_its_voicemail_note(line: Line) -> None:
    line.call()
    line.ring_ended()
    line.step(LineAnswer("", call_ended(line.session, CALL_SID, "completed", CALLER, line.services, MORNING)))
    assert OutboxKind.CRM_VOICEMAIL not in line.kinds()

    due = recording_ready(line.session, line.row().id, RECORDING, MORNING + timedelta(seconds=5))
    line.session.commit()

    assert len(due) == 1 and OutboxKind.CRM_VOICEMAIL in line.kinds()
    line.deliver_due(MORNING + timedelta(seconds=6))
    assert any(text.startswith("Voicemail ") and RECORDING[1] in text for _, text in line.crm.notes)


def test_with_transcription_the_voicemail_note_waits_for_it_and_carries_it(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    line = make_line(session, settings, tmp_path, voice_transcribe=True)
    line.call()
    record = parse(line.ring_ended().twiml).find("Record")
    assert record is not None and record.attrib["transcribe"] == "true"
    row = line.row()
    assert record.attrib["transcribeCallback"] == f"{PUBLIC_URL}/hooks/twilio/voice/inbound/transcription?call={row.id}"
    line.step(voicemail_recorded(line.session, row.id, RECORDING, MORNING))

    line.deliver_due(MORNING + timedelta(seconds=1))
    waiting = line.session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_VOICEMAIL)).one()
    assert waiting.state == OutboxState.PENDING and "waiting for Twilio's transcription" in (waiting.last_error or "")

    due = transcription_ready(line.session, row.id, "Hi, this is a test caller, please call back.", "completed",
                              MORNING + timedelta(seconds=40))
    line.session.commit()
    assert due == [waiting.id]
    line.deliver_due(MORNING + timedelta(seconds=41))
    [note] = [text for _, text in line.crm.notes if text.startswith("Voicemail ")]
    assert note.endswith("Transcription (by Twilio, may contain mistakes):\n"
                         "Hi, this is a test caller, please call back.")


def test_a_call_whose_end_twilio_never_reported_is_closed_by_its_age_and_becomes_a_lead(line: Line) -> None:
    line.call()

    assert close_stale_calls(line.session, line.services.settings, MORNING + timedelta(minutes=2)) == []
    stored = close_stale_calls(line.session, line.services.settings, MORNING + timedelta(minutes=6))
    line.step(LineAnswer("", stored))

    assert len(stored) == 1 and line.row().outcome == CallOutcome.ABANDONED
    assert line.lead().phone == CALLER


def test_a_call_that_ended_without_admitflow_ever_answering_it_is_still_a_caller_to_call_back(line: Line) -> None:
    stored = call_ended(line.session, CALL_SID, "completed", CALLER, line.services, MORNING)
    line.step(LineAnswer("", stored))

    assert len(stored) == 1
    assert (line.row().outcome, line.lead().phone) == (CallOutcome.MISSED, CALLER)


def test_a_call_from_the_number_of_a_form_sent_an_hour_ago_joins_that_lead_and_raises_its_priority(
    line: Line, settings: Settings, form_object: dict[str, Any]
) -> None:
    an_hour_before = f"{MORNING - timedelta(hours=1):%Y-%m-%d %H:%M:%S}"
    new_lead(line.session, settings, form_object, **{"3": "(617) 555-0161", "date_created": an_hour_before})
    line.call()

    line.step(LineAnswer("", call_ended(line.session, CALL_SID, "completed", CALLER, line.services, MORNING)))

    lead = line.lead()
    assert (lead.repeat_count, lead.priority, lead.first_name) == (1, "high", "Jordan")
    assert sorted(line.session.scalars(select(Submission.source)).all()) == [SubmissionSource.CALL,
                                                                            SubmissionSource.CLI]


def test_a_staff_member_calling_the_line_is_not_rung_themselves(line: Line) -> None:
    dial = parse(line.call(caller=BLAKE).twiml).find("Dial")

    assert dial is not None and [number.text for number in dial] == [AVERY, DANA]


def test_a_call_taken_but_never_put_through_because_the_caller_hung_up_is_an_abandoned_call_and_a_lead(
    line: Line,
) -> None:
    line.call()
    take_call(line.session, line.row().id, "avery", "1", MORNING)
    line.session.commit()

    ended = line.ring_ended(dial_status="canceled", call_status="completed")

    assert len(ended.submission_ids) == 1
    assert (line.row().outcome, line.lead().phone) == (CallOutcome.ABANDONED, CALLER)

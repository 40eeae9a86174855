"""The center's number as a door, on what we run ourselves: the web server, a Celery worker and beat on Redis, and
PostgreSQL (one stack for the module: tests/support/line_stack.py). Twilio and HubSpot are the loopback fake;
every webhook Twilio would send is played by the test, signed. Staff are on call all week: Avery, then Blake, then
Dana, all rung at once.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from tests.conftest import make_entry
from tests.fakes.rosters import ALWAYS_ON
from tests.support.line_stack import AVERY, BLAKE, CENTER_NUMBER, DANA, LineStack, line_stack
from tests.support.processes import wait_for
from worker.staff.phone_line import ASK_FOR_NUMBER, PUT_THROUGH, THANKS, WHISPER_PROMPT
from worker.store.db import session_scope
from worker.store.models import CallOutcome, OutboxKind, OutboxMessage, Submission, SubmissionSource

pytestmark = pytest.mark.services

INBOUND = "/hooks/twilio/voice/inbound"
INBOUND_STATUS = "/hooks/twilio/voice/inbound/status"
AUTO_REPLY = "Thank you for your text. Our admissions team will call you back soon. Reply STOP to stop texts."
# Words and digits that must never reach a log line: a caller's number and what a person wrote.
CANARY_TEXT = "canary-xyzzy I need help with my drinking"


@pytest.fixture(scope="module")
def desk(postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LineStack]:
    with line_stack(postgres_url, redis_url, tmp_path_factory.mktemp("line"), ALWAYS_ON,
                    SMS_AUTO_REPLY=AUTO_REPLY) as stack:
        yield stack


@pytest.fixture(autouse=True)
def quiet_afterwards(desk: LineStack) -> Iterator[None]:
    yield
    desk.stop_reminders()


def call_sid(n: int) -> str:
    return f"CA{n:032x}"


def rings(desk: LineStack, sid: str, caller: str) -> ET.Element:
    """Twilio's incoming-call request for a call from `caller`: the <Dial> that rings the team."""
    dial = desk.twiml(INBOUND, {"CallSid": sid, "From": caller, "To": CENTER_NUMBER, "CallStatus": "ringing",
                                "Direction": "inbound"}).find("Dial")
    assert dial is not None
    return dial


def nobody_takes_it(desk: LineStack, dial: ET.Element, sid: str) -> ET.Element:
    """The <Dial> times out with the caller still on the line: the voicemail TwiML."""
    return desk.twiml(dial.attrib["action"], {"CallSid": sid, "DialCallStatus": "no-answer",
                                              "CallStatus": "in-progress"})


def leaves_voicemail(desk: LineStack, voicemail: ET.Element, sid: str, n: int) -> str:
    """The caller speaks after the tone and hangs up: the <Record> action, then the call's end. Returns the
    recording's URL."""
    record = voicemail.find("Record")
    assert record is not None
    url = f"https://api.twilio.com/2010-04-01/Accounts/AC0/Recordings/RE{n:032x}"
    recording = {"CallSid": sid, "RecordingSid": f"RE{n:032x}", "RecordingUrl": url, "RecordingDuration": "31"}
    assert desk.twiml(record.attrib["action"], recording).findtext("Say") == THANKS
    desk.as_twilio(INBOUND_STATUS, {"CallSid": sid, "CallStatus": "completed"})
    desk.as_twilio(record.attrib["recordingStatusCallback"], {**recording, "RecordingStatus": "completed"})
    return url


def notes_about(desk: LineStack, ref: str) -> list[str]:
    return [note["properties"]["hs_note_body"] for note in list(desk.providers.state.notes.values())
            if ref in note["properties"]["hs_note_body"]]


def test_a_call_is_answered_by_the_second_staff_member_after_the_first_ones_voicemail_took_it_even_across_a_restart(
    desk: LineStack,
) -> None:
    sid, caller = call_sid(1), "+16175550161"
    dial = rings(desk, sid, caller)
    numbers = dial.findall("Number")
    assert [number.text for number in numbers] == [AVERY, BLAKE, DANA]
    assert dial.attrib["answerOnBridge"] == "true" and dial.attrib["callerId"] == CENTER_NUMBER

    desk.restart_web()  # a deploy while the team's phones ring: the call's state is in the database

    avery_voicemail = desk.twiml(numbers[0].attrib["url"], {"CallSid": "CA" + "a" * 32, "ParentCallSid": sid})
    assert avery_voicemail.findtext("Gather/Say") == WHISPER_PROMPT and avery_voicemail[-1].tag == "Hangup"
    blake = desk.twiml(numbers[1].attrib["url"], {"CallSid": "CA" + "b" * 32, "ParentCallSid": sid})
    gather = blake.find("Gather")
    assert gather is not None
    assert [(child.tag, child.text) for child in desk.twiml(gather.attrib["action"], {"Digits": "1"})] == [
        ("Say", PUT_THROUGH)]
    over = desk.twiml(dial.attrib["action"], {"CallSid": sid, "DialCallStatus": "completed",
                                              "DialCallDuration": "184", "CallStatus": "in-progress"})
    desk.as_twilio(INBOUND_STATUS, {"CallSid": sid, "CallStatus": "completed"})

    assert [child.tag for child in over] == ["Hangup"]
    call = desk.call(sid)
    assert (call.outcome, call.answered_by) == (CallOutcome.ANSWERED, "blake")
    assert desk.leads_with_phone(caller) == [], "a call staff took live is no lead to call back"
    assert desk.metric("admitflow_inbound_calls_total", outcome="answered") >= 1


def test_a_call_nobody_takes_goes_to_voicemail_becomes_a_lead_is_texted_claimed_and_bridged(desk: LineStack) -> None:
    sid, caller = call_sid(2), "+16175550162"
    texts_before, calls_before = len(desk.texts_to(AVERY)), len(desk.calls_to(AVERY))
    voicemail = nobody_takes_it(desk, rings(desk, sid, caller), sid)
    recording_url = leaves_voicemail(desk, voicemail, sid, 2)

    lead = desk.lead_with_phone(caller)
    wait_for(lambda: len(desk.texts_to(AVERY)) == texts_before + 1, what="the missed-call text to Avery")
    assert desk.texts_to(AVERY)[-1]["Body"].startswith(
        f"admitflow: MISSED CALL to the admissions line: callback request {lead.ref}")
    wait_for(lambda: len(notes_about(desk, lead.ref)) == 2, what="the call's note and the voicemail's note")
    assert any(recording_url in note and note.startswith(f"Voicemail {lead.ref}")
               for note in notes_about(desk, lead.ref))
    wait_for(lambda: desk.lead_with_phone(caller).crm_task_id is not None, what="the CRM callback task")

    desk.make_due(lead.id)
    wait_for(lambda: len(desk.calls_to(AVERY)) == calls_before + 1, what="the reminder call to Avery")
    reminder = desk.calls_to(AVERY)[-1]
    assert reminder["MachineDetection"] == "Enable"
    prompt = desk.twiml(reminder["Url"], {"CallSid": reminder["sid"], "AnsweredBy": "human"})
    gather = prompt.find("Gather")
    assert gather is not None
    bridge = desk.twiml(gather.attrib["action"], {"CallSid": reminder["sid"], "Digits": "1"}).find("Dial")
    assert bridge is not None and bridge.findtext("Number") == caller and bridge.attrib["callerId"] == CENTER_NUMBER
    # This flow takes a second on loopback; a longer bridged call would have begun before the missed call.
    desk.twiml(bridge.attrib["action"], {"DialCallStatus": "completed", "DialCallDuration": "0",
                                         "DialCallSid": "CA" + "c" * 32})

    task_id = desk.lead_with_phone(caller).crm_task_id or ""
    wait_for(lambda: desk.providers.state.tasks[task_id]["properties"].get("hs_task_status") == "COMPLETED",
             what="the callback task closed by the logged call")
    assert desk.metric("admitflow_missed_call_to_callback_seconds_count") >= 1
    assert desk.metric("admitflow_voicemails_total") >= 1
    assert desk.metric("admitflow_inbound_calls_total", outcome="missed") >= 1
    logs = desk.log_text()
    for secret in ("5550162", "555-0162", f"RE{2:032x}"):
        assert secret not in logs, f"{secret!r} reached a log line"


def test_an_abandoned_call_from_a_number_that_sent_the_form_an_hour_ago_joins_that_lead(desk: LineStack) -> None:
    caller, sid = "+16175550163", call_sid(3)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    texts_before = len(desk.texts_to(AVERY))
    desk.post_entry(make_entry(9003, date_created=f"{an_hour_ago:%Y-%m-%d %H:%M:%S}", **{
        "1.3": "Morgan", "2": "morgan.sample@example.org", "3": "(617) 555-0163", "ip": "192.0.2.63"}))
    form_lead = desk.lead_with_phone(caller)
    wait_for(lambda: len(desk.texts_to(AVERY)) == texts_before + 1, what="the form's alert text")
    with session_scope() as session:  # that alert went out an hour ago
        session.execute(update(OutboxMessage).where(OutboxMessage.lead_id == form_lead.id)
                        .values(created_at=an_hour_ago))

    rings(desk, sid, caller)
    desk.as_twilio(INBOUND_STATUS, {"CallSid": sid, "CallStatus": "completed", "CallDuration": "9"})

    wait_for(lambda: len(desk.texts_to(AVERY)) == texts_before + 2, what="the missed-call text about the same lead")
    assert f"MISSED CALL to the admissions line: callback request {form_lead.ref}" in desk.texts_to(AVERY)[-1]["Body"]
    [lead] = desk.leads_with_phone(caller)
    assert (lead.ref, lead.repeat_count, lead.priority, lead.first_name) == (form_lead.ref, 1, "high", "Morgan")
    assert desk.call(sid).outcome == CallOutcome.ABANDONED
    assert desk.metric("admitflow_inbound_calls_total", outcome="abandoned") >= 1


def test_a_caller_who_withheld_their_number_is_a_lead_staff_see_as_such_with_no_callback_task(
    desk: LineStack,
) -> None:
    sid = call_sid(4)
    texts_before = len(desk.texts_to(AVERY))
    without_number = len(desk.leads_with_phone(None))
    voicemail = nobody_takes_it(desk, rings(desk, sid, "+266696687"), sid)
    assert ASK_FOR_NUMBER in (voicemail.findtext("Say") or "")
    recording_url = leaves_voicemail(desk, voicemail, sid, 4)

    wait_for(lambda: len(desk.leads_with_phone(None)) == without_number + 1, what="the lead without a number")
    wait_for(lambda: len(desk.texts_to(AVERY)) == texts_before + 1, what="the withheld-number text")
    body = desk.texts_to(AVERY)[-1]["Body"]
    assert body.startswith("admitflow: Missed call to the admissions line, number withheld (R-")
    ref = body.split("(", 1)[1].split(")", 1)[0]
    wait_for(lambda: any(recording_url in note for note in notes_about(desk, ref)), what="the voicemail note")
    assert not any(task["properties"]["hs_task_subject"] == f"Callback {ref}"
                   for task in desk.providers.state.tasks.values())
    [lead] = [lead for lead in desk.leads_with_phone(None) if lead.ref == ref]

    def alert_delivered() -> bool:
        with session_scope() as session:
            return session.scalar(select(OutboxMessage.state).where(
                OutboxMessage.lead_id == lead.id, OutboxMessage.kind == OutboxKind.STAFF_ALERT)) == "delivered"

    wait_for(alert_delivered, what="the staff alert's delivery, committed with any reminder it starts")
    assert desk.timer(lead.id) is None, "nobody is reminded to call back a number nobody has"


def test_an_inbound_text_becomes_a_lead_with_an_automatic_reply_and_stop_is_left_to_twilio(desk: LineStack) -> None:
    person, sid = "+16175550166", "SM" + "6" * 32
    texts_before = len(desk.texts_to(AVERY))

    reply = desk.twiml("/hooks/twilio/sms", {"MessageSid": sid, "From": person, "To": CENTER_NUMBER,
                                             "Body": CANARY_TEXT, "NumMedia": "0"})
    desk.twiml("/hooks/twilio/sms", {"MessageSid": "SM" + "7" * 32, "From": "+16175550167", "To": CENTER_NUMBER,
                                     "Body": "STOP"})

    assert list(reply) == []
    lead = desk.lead_with_phone(person)
    wait_for(lambda: len(desk.texts_to(person)) == 1, what="the automatic reply")
    assert desk.texts_to(person)[0]["Body"] == AUTO_REPLY
    wait_for(lambda: len(desk.texts_to(AVERY)) == texts_before + 1, what="the text about the text")
    assert desk.texts_to(AVERY)[-1]["Body"].startswith(f"admitflow: New TEXT to the admissions line: callback "
                                                       f"request {lead.ref}")
    wait_for(lambda: any("canary-xyzzy" in note for note in notes_about(desk, lead.ref)), what="the CRM note")
    assert desk.leads_with_phone("+16175550167") == []
    assert desk.metric("admitflow_submissions_received_total", source="sms") >= 1
    logs = desk.log_text()
    for secret in ("canary-xyzzy", "drinking", "5550166", "555-0166"):
        assert secret not in logs, f"{secret!r} reached a log line"


def test_twilio_retrying_the_same_webhooks_makes_one_lead_one_text_and_one_reply(desk: LineStack) -> None:
    person, text_sid, sid = "+16175550168", "SM" + "8" * 32, call_sid(8)
    texts_before = len(desk.texts_to(AVERY))
    text = {"MessageSid": text_sid, "From": person, "To": CENTER_NUMBER, "Body": "Please call me back"}

    for _ in range(3):
        desk.twiml("/hooks/twilio/sms", text)
    first_dial = rings(desk, sid, person)
    assert ET.tostring(rings(desk, sid, person)) == ET.tostring(first_dial)
    for _ in range(2):
        desk.as_twilio(INBOUND_STATUS, {"CallSid": sid, "CallStatus": "completed"})

    lead = desk.lead_with_phone(person)

    def sources() -> list[str]:
        with session_scope() as session:
            return sorted(session.scalars(select(Submission.source).where(Submission.lead_id == lead.id)))

    wait_for(lambda: len(sources()) == 2, what="the text and the call, both on the lead")
    wait_for(lambda: any(lead.ref in sms["Body"] for sms in desk.texts_to(AVERY)), what="the staff text")
    wait_for(lambda: len(desk.texts_to(person)) == 1, what="the automatic reply")
    with session_scope() as session:
        alerts = session.scalars(select(OutboxMessage.id).where(
            OutboxMessage.lead_id == lead.id, OutboxMessage.kind == OutboxKind.STAFF_ALERT)).all()
    assert sources() == [SubmissionSource.CALL, SubmissionSource.SMS], "each request stored once"
    assert len(alerts) == 1, "the call moments after the text joined its lead without texting staff again"
    assert len(desk.texts_to(AVERY)) == texts_before + 1 and len(desk.texts_to(person)) == 1


def test_a_reminder_call_that_reaches_a_staff_voicemail_escalates_at_once(desk: LineStack) -> None:
    texts_before = {phone: len(desk.texts_to(phone)) for phone in (AVERY, BLAKE)}
    calls_before = {phone: len(desk.calls_to(phone)) for phone in (AVERY, BLAKE)}
    desk.post_entry(make_entry(9009, **{"1.3": "Riley", "2": "riley.sample@example.org", "3": "(617) 555-0169",
                                        "ip": "192.0.2.69"}))
    lead = desk.lead_with_phone("+16175550169")
    wait_for(lambda: len(desk.texts_to(AVERY)) == texts_before[AVERY] + 1, what="the alert text")

    desk.make_due(lead.id)
    wait_for(lambda: len(desk.calls_to(AVERY)) == calls_before[AVERY] + 1, what="the reminder call to Avery")
    reminder = desk.calls_to(AVERY)[-1]
    # Twilio asks for the TwiML once the call is answered and detection is done, seconds after it was placed: by
    # then the reminder step has committed the call's id.
    wait_for(lambda: getattr(desk.timer(lead.id), "waiting_call_sid", None) == reminder["sid"],
             what="the reminder step to commit")
    answered = desk.twiml(reminder["Url"], {"CallSid": reminder["sid"], "AnsweredBy": "machine_start"})

    assert [child.tag for child in answered] == ["Hangup"]
    wait_for(lambda: len(desk.calls_to(BLAKE)) == calls_before[BLAKE] + 1
             and len(desk.texts_to(BLAKE)) == texts_before[BLAKE] + 1,
             what="escalation to Blake without waiting five minutes", timeout=15)
    escalation = desk.texts_to(BLAKE)[-1]["Body"]
    assert escalation.startswith("admitflow: UNCLAIMED for ") and lead.ref in escalation

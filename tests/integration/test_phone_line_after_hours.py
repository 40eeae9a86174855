"""An after-hours call on the running stack (tests/support/line_stack.py): nobody is on shift now, so the call goes
straight to voicemail, becomes a lead, and the supervisor is texted. Its own stack, as the roster differs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.fakes.rosters import days_only
from tests.support.line_stack import AVERY, CENTER_NUMBER, DANA, LineStack, line_stack
from tests.support.processes import wait_for
from worker.staff.phone_line import DEFAULT_AFTER_HOURS_PROMPT, THANKS
from worker.staff.roster import DAYS
from worker.store.models import CallOutcome

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def night_desk(postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LineStack]:
    # The only shift is three days from today in the center's zone: whenever the test runs, nobody is on shift.
    today = datetime.now(ZoneInfo("America/New_York")).weekday()
    roster = days_only(DAYS[(today + 3) % 7])
    with line_stack(postgres_url, redis_url, tmp_path_factory.mktemp("night"), roster) as stack:
        yield stack


def test_an_after_hours_call_goes_straight_to_voicemail_and_its_lead_texts_the_supervisor(
    night_desk: LineStack,
) -> None:
    sid, caller = "CA" + "9" * 32, "+16175550159"

    answer = night_desk.twiml("/hooks/twilio/voice/inbound", {"CallSid": sid, "From": caller, "To": CENTER_NUMBER,
                                                              "CallStatus": "ringing"})

    assert [child.tag for child in answer] == ["Say", "Record", "Say", "Hangup"]
    assert answer[0].text == DEFAULT_AFTER_HOURS_PROMPT
    record = answer[1]
    recording = {"CallSid": sid, "RecordingSid": "RE" + "9" * 32, "RecordingDuration": "12",
                 "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC0/Recordings/RE" + "9" * 32}
    assert night_desk.twiml(record.attrib["action"], recording).findtext("Say") == THANKS
    night_desk.as_twilio("/hooks/twilio/voice/inbound/status", {"CallSid": sid, "CallStatus": "completed"})

    lead = night_desk.lead_with_phone(caller)
    wait_for(lambda: len(night_desk.texts_to(DANA)) == 1, what="the text to the supervisor")
    assert lead.ref in night_desk.texts_to(DANA)[0]["Body"] and night_desk.texts_to(AVERY) == []
    assert night_desk.call(sid).outcome == CallOutcome.AFTER_HOURS
    assert night_desk.calls_to(DANA) == [], "nobody's phone rang for the call itself"
    wait_for(lambda: any(recording["RecordingUrl"] in note["properties"]["hs_note_body"]
                         for note in night_desk.providers.state.notes.values()), what="the voicemail note")
    wait_for(lambda: night_desk.timer(lead.id) is not None, what="the supervisor's reminder timer")
    timer = night_desk.timer(lead.id)
    assert timer is not None and timer.due_at > lead.created_at + timedelta(minutes=4)

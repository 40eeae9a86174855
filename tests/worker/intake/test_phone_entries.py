from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from worker.intake.entries import RejectedEntry, store_entry
from worker.intake.phone_entries import PhoneEntry, call_entry, caller_number, phone_fields, text_entry
from worker.store.models import SubmissionSource

CALL_SID = "CA" + "3" * 32
AT = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def test_a_call_is_stored_once_under_its_call_sid_however_often_it_is_stored(session: Session) -> None:
    entry = call_entry(CALL_SID, AT, "+16175550161", "missed", staff_rung=3, ring_seconds=20, voicemail=True)

    first = store_entry(session, site="main", entry=entry, source=SubmissionSource.CALL)
    again = store_entry(session, site="main", entry=entry, source=SubmissionSource.CALL)

    assert (first.created, again.created, again.submission_id) == (True, False, first.submission_id)


@pytest.mark.parametrize(("entry", "source"), [
    ({"id": "12", "form_id": "call"}, SubmissionSource.CALL),
    ({"id": CALL_SID, "form_id": "sms"}, SubmissionSource.SMS),
    ({"id": "SM" + "3" * 32, "form_id": "call"}, SubmissionSource.CALL),
    ({"id": CALL_SID, "form_id": "1"}, SubmissionSource.CALL),
    ("not an entry", SubmissionSource.SMS),
])
def test_an_entry_that_is_not_a_twilio_call_or_text_is_refused_without_its_contents(
    session: Session, entry: object, source: SubmissionSource
) -> None:
    with pytest.raises(RejectedEntry, match="not a call's or a text's"):
        store_entry(session, site="main", entry=entry, source=source)  # type: ignore[arg-type]


@pytest.mark.parametrize("withheld", ["+266696687", "266696687", "+7378742833", "+86282452253", "Anonymous",
                                      "RESTRICTED", "unknown", "", None])
def test_a_withheld_caller_id_is_no_number(withheld: str | None) -> None:
    assert caller_number(withheld, "US") is None


def test_a_callers_number_is_kept_in_e164() -> None:
    assert caller_number("+16175550161", "US") == "+16175550161"
    assert caller_number("(617) 555-0161", "US") == "+16175550161"


@given(st.text(max_size=40))
def test_any_caller_id_is_a_number_in_e164_or_none(raw: str) -> None:
    number = caller_number(raw, "US")
    assert number is None or (number.startswith("+") and number[1:].isdigit())


def test_a_text_is_read_back_as_the_persons_number_and_words_and_a_call_as_what_happened() -> None:
    text = PhoneEntry.model_validate(text_entry("SM" + "4" * 32, AT, "+16175550171", " Please\u200b call  me ", 2))
    call = PhoneEntry.model_validate(call_entry(CALL_SID, AT, None, "after_hours", staff_rung=0, ring_seconds=0,
                                                voicemail=False))

    assert phone_fields(text).phone == "+16175550171"
    assert phone_fields(text).message == "Please call  me\n(2 picture(s) or file(s) attached, kept at Twilio)"
    assert phone_fields(call).message == ("Called the admissions line after hours, with nobody on shift. The caller "
                                          "withheld their number: there is no number to call back.")

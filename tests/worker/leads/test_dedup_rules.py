from __future__ import annotations

from datetime import UTC, datetime

import pytest

from integrations.gravityforms.mapping import ApplicantFields
from worker.intake.screening import screen
from worker.leads.evidence import THRESHOLD, Field, Level, Profile, compare, first_name_level

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("Jordan", "jordan", Level.SAME),
        ("José", "Jose", Level.SAME),
        ("J", "Jordan", Level.INITIAL),
        ("Robert", "Bob", Level.NICKNAME),
        ("William", "Bill", Level.NICKNAME),
        ("Jordan", "Jordna", Level.TYPO_BETWEEN_NAMES),  # also one slip from Jordana
        # The failure class of issue 15: one slip in a name under six letters.
        ("Sarah", "Sauah", Level.TYPO),
        ("Donna", "Dnona", Level.TYPO_BETWEEN_NAMES),
        ("Paul", "Pul", Level.TYPO),
        ("Linda", "Lnida", Level.TYPO_BETWEEN_NAMES),
        ("Jose", "Jse", Level.TYPO_BETWEEN_NAMES),
        ("Jennifer", "Jne", Level.NICKNAME_TYPO),  # Jen, mistyped
        ("Jordan", None, Level.MISSING),
        ("", "Jordan", Level.MISSING),
    ],
)
def test_first_names_of_one_person_get_an_agreeing_level(a: str | None, b: str | None, level: Level) -> None:
    assert first_name_level(a, b) == level
    assert first_name_level(b, a) == level


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("Maria", "Mario", Level.CLOSE_NAMES),
        ("Paul", "Paula", Level.CLOSE_NAMES),
        ("Mark", "Mary", Level.CLOSE_NAMES),
        ("Jon", "Jan", Level.CLOSE_NAMES),
        ("Daniel", "Danielle", Level.TWO_NAMES),
        ("Jordan", "Morgan", Level.TWO_NAMES),
        ("Alex", "Sam", Level.TWO_NAMES),
        ("Robert", "William", Level.TWO_NAMES),  # the nickname dataset links them through "Bill"
        ("Rosa", "Linda", Level.TWO_NAMES),  # and these through "Rosalinda"
        ("Liz", "Beth", Level.TWO_NAMES),  # one person's only alongside Elizabeth (below)
    ],
)
def test_first_names_of_two_people_get_a_level_the_household_guard_holds_on(a: str, b: str, level: Level) -> None:
    assert first_name_level(a, b) == level
    assert first_name_level(b, a) == level


def request(first: str, last: str | None = "Sample", phone: str | None = "+16175550123",
            email: str | None = None, also: tuple[str, ...] = ()) -> Profile:
    return Profile((first, *also), last, phone, email, AT, AT)


def test_one_typo_in_a_short_first_name_joins_with_a_shared_phone_and_last_name() -> None:
    assert compare(request("Sarah"), request("Sauah")).same_person
    assert compare(request("Paul", email="paul@example.org"), request("Pul", email="paul@example.org")).same_person


def test_a_household_on_one_phone_stays_apart_whatever_else_agrees() -> None:
    couple = compare(request("Jordan", email="home@example.org"), request("Morgan", email="home@example.org"))
    assert couple.guard == Level.TWO_NAMES
    assert couple.score >= THRESHOLD  # the sum alone would have merged them
    assert not couple.same_person


def test_names_one_letter_apart_are_two_people_unless_the_inbox_is_shared_too() -> None:
    assert not compare(request("Paul", email="paul@example.org"), request("Paula", email="pa@example.org")).same_person
    assert not compare(request("Paul"), request("Paula")).same_person
    assert compare(request("Michael", email="mj@example.org"), request("Micheal", email="mj@example.org")).same_person


def test_a_misspelling_never_bridges_two_real_names() -> None:
    # A lead that learnt "Ericc" (Eric, mistyped) is still Eric's: Erica on the same phone is someone else.
    assert not compare(request("Eric", also=("Ericc",)), request("Erica")).same_person


def test_two_nicknames_of_one_name_agree_alongside_it() -> None:
    assert compare(request("Liz", also=("Elizabeth",)), request("Beth")).same_person
    assert not compare(request("Liz"), request("Beth")).same_person


def test_the_same_device_within_minutes_joins_a_correction_of_phone_and_email() -> None:
    first = request("Jordan", phone="+16175550123", email="jordan@example.org")
    corrected = request("Jordan", phone="+16175550128", email="jordan.sample@example.org")
    assert compare(first, corrected, same_device_soon=True).same_person
    assert not compare(first, corrected).same_person
    colleague = request("Morgan", phone="+16175550128", email="morgan@example.org")
    assert not compare(first, colleague, same_device_soon=True).same_person


def test_the_family_laptop_is_no_evidence_for_an_initial() -> None:
    jordan = request("J", phone="+16175550123", email="j@example.org")
    morgan = request("Morgan", phone="+16175550128", email="morgan@example.org")
    assert compare(jordan, morgan, same_device_soon=True).levels[Field.DEVICE] == Level.SOON_OTHER_NAME
    assert not compare(jordan, morgan, same_device_soon=True).same_person


def test_a_slip_between_two_relatives_names_joins_neither_on_the_family_laptop_alone() -> None:
    # Paul mistypes his name as Paull; minutes later Paula, on the same laptop, corrects a mistyped phone and inbox.
    paull = request("Paull", phone="+16175550163", email="paul@example.org")
    paula = request("Paula", phone="+16175550168", email="paula.home@example.org")
    assert compare(paull, paula, same_device_soon=True).levels[Field.DEVICE] == Level.SOON_OTHER_NAME
    assert not compare(paull, paula, same_device_soon=True).same_person
    # A slip that is no other name is still a correction from the same device.
    sarah = request("Sarah", phone="+16175550168", email="sarah.home@example.org")
    assert compare(request("Sauah", phone="+16175550163"), sarah, same_device_soon=True).same_person


def test_a_slip_between_two_relatives_names_stays_apart_on_the_family_phone_with_another_inbox() -> None:
    paull = request("Paull", email="paul@example.org")
    assert not compare(paull, request("Paula", email="paula.home@example.org"), same_device_soon=True).same_person
    assert compare(paull, request("Paul", email="paul@example.org")).same_person
    assert compare(paull, request("Paul")).same_person


def test_the_family_laptop_weighs_the_names_sent_from_it_not_every_name_of_the_lead() -> None:
    lead = request("Paul", also=("Paull",), phone="+16175550163", email="paul@example.org")
    mistyped = request("Paul", phone="+16175550168", email="paulx@example.org")
    assert not compare(mistyped, lead, same_device_soon=True, device_names=("Paull",)).same_person
    assert compare(mistyped, lead, same_device_soon=True, device_names=("Paul",)).same_person


def test_a_call_or_text_known_only_by_its_number_joins_the_lead_with_that_phone_whichever_came_first() -> None:
    caller = Profile((), None, "+16175550123", None, AT, AT)

    assert compare(caller, request("Jordan")).levels[Field.PHONE] == Level.ONLY_PHONE
    assert compare(caller, request("Jordan")).same_person and compare(request("Jordan"), caller).same_person
    assert not compare(caller, request("Jordan", phone="+16175550124")).same_person


def test_names_alone_never_merge() -> None:
    assert not compare(request("Jordan", phone=None), request("Jordan", phone=None)).same_person


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (ApplicantFields(first_name="Cheap pills www.example.ru", last_name="X"), "link_in_name"),
        (ApplicantFields(first_name="<script>alert(1)</script>"), "markup_in_name"),
        (ApplicantFields(first_name="Xkcdfgh", last_name="Qwrtzp"), "gibberish_name"),
        (ApplicantFields(first_name="Jordan123"), "gibberish_name"),
        (ApplicantFields(first_name="Jordan", message="see http://a.example.org http://b.example.org "
                                                      "http://c.example.org"), "links_in_message"),
        (ApplicantFields(first_name="Jordan", honeypot="anything"), "honeypot"),
    ],
)
def test_it_flags_what_looks_automated(fields: ApplicantFields, reason: str) -> None:
    assert screen(fields) == reason


@pytest.mark.parametrize(
    "fields",
    [
        ApplicantFields(first_name="Jordan", last_name="Sample", message="Please call me after 5pm."),
        ApplicantFields(first_name="Nguyen", last_name="Thi"),
        ApplicantFields(first_name="Krzysztof", last_name="Brzęczyszczykiewicz"),
        ApplicantFields(first_name="明", last_name="王"),
        ApplicantFields(first_name="Mary-Kate", last_name="O'Brien"),
        ApplicantFields(first_name="Jordan", message="I found you at https://clinic.example.org/ketamine"),
        ApplicantFields(),
    ],
)
def test_it_never_flags_an_ordinary_person(fields: ApplicantFields) -> None:
    assert screen(fields) is None

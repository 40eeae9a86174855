from __future__ import annotations

import pytest

from integrations.gravityforms.mapping import ApplicantFields
from worker.intake.screening import screen
from worker.leads.dedup import first_names_agree, full_names_match


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Jordan", "jordan"),
        ("José", "Jose"),
        ("J", "Jordan"),
        ("Robert", "Bob"),
        ("William", "Bill"),
        ("Elizabeth", "Liz"),
        ("Liz", "Beth"),
        ("Jordan", "Jordna"),
        ("Katherine", "Katharine"),
        ("Jordan", None),
        ("", "Jordan"),
    ],
)
def test_first_names_of_one_person_agree(a: str | None, b: str | None) -> None:
    assert first_names_agree(a, b) and first_names_agree(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Maria", "Mario"),
        ("Mark", "Mary"),
        ("Jordan", "Morgan"),
        ("Daniel", "Danielle"),
        ("Jon", "Jan"),
        ("Alex", "Sam"),
        ("Robert", "William"),  # the nickname dataset links them through "Bill"
    ],
)
def test_first_names_of_two_people_disagree(a: str, b: str) -> None:
    assert not first_names_agree(a, b) and not first_names_agree(b, a)


def test_device_evidence_needs_the_whole_name_on_both_sides() -> None:
    assert full_names_match("Jordan", "Sample", "jordan", "SAMPLE")
    assert full_names_match("Jordan", "Sampel", "Jordan", "Sample")  # a typo in a name of 6+ letters is forgiven
    assert not full_names_match("Jordan", "Smith", "Jordan", "Smyth")  # but not in a shorter one
    assert not full_names_match("Jordan", None, "Jordan", "Sample")
    assert not full_names_match("Jordan", "Sample", "Jordan", "Simple-Smith")
    assert not full_names_match("Jordan", "Sample", "Morgan", "Sample")


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

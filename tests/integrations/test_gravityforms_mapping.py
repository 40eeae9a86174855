from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from integrations.gravityforms.mapping import ApplicantFields, read_applicant
from integrations.gravityforms.models import EntryMeta, Form

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gravityforms"
PROPERTY = settings(max_examples=300, deadline=None, database=None)


def example_form() -> Form:
    return Form.model_validate(json.loads((EXAMPLES / "form.json").read_text(encoding="utf-8")))


def example_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((EXAMPLES / "entries.json").read_text(encoding="utf-8"))["entries"]
    return entries


def entry(**values: Any) -> dict[str, Any]:
    """A Gravity Forms entry: meta keys plus one key per field or input id ("1.3" is passed as _1_3)."""
    fields = {key.lstrip("_").replace("_", "."): value for key, value in values.items()}
    return {"id": "201", "form_id": "1", "date_created": "2026-11-20 14:02:11", "status": "active", **fields}


def name_field(field_id: int, label: str = "Name") -> dict[str, Any]:
    sub_ids = {"2": "Prefix", "3": "First", "4": "Middle", "6": "Last", "8": "Suffix"}
    return {
        "id": field_id, "type": "name", "label": label, "nameFormat": "advanced",
        "inputs": [{"id": f"{field_id}.{sub}", "label": sub_label} for sub, sub_label in sub_ids.items()],
    }


def consent_field(field_id: int, label: str = "Consent") -> dict[str, Any]:
    return {
        "id": field_id, "type": "consent", "label": label,
        "inputs": [
            {"id": f"{field_id}.1", "label": label},
            {"id": f"{field_id}.2", "label": "Text", "isHidden": True},
            {"id": f"{field_id}.3", "label": "Description", "isHidden": True},
        ],
    }


def form(*fields: dict[str, Any]) -> Form:
    return Form.model_validate({"id": 1, "title": "Request a confidential call", "fields": list(fields)})


# --- the example form ----------------------------------------------------------------------------------------------


def test_it_reads_every_part_of_the_example_entry() -> None:
    assert read_applicant(example_form(), example_entries()[0]) == ApplicantFields(
        first_name="Jordan",
        last_name="Sample",
        email="jordan.sample@example.org",
        phone="(617) 555-0142",
        message="I would like to talk to someone about treatment options.",
        consent=True,
        consent_to_text=True,
    )


def test_an_unticked_text_checkbox_on_the_example_form_is_a_no_to_texts() -> None:
    fields = read_applicant(example_form(), example_entries()[2])
    assert fields.consent is True
    assert fields.consent_to_text is False


def test_it_returns_values_as_typed_and_leaves_cleaning_to_the_normalizers() -> None:
    fields = read_applicant(example_form(), example_entries()[1])
    assert fields.email == "Jordan.Sample@Example.org"
    assert fields.phone == "617.555.0142"


# --- names ---------------------------------------------------------------------------------------------------------


def test_a_name_field_gives_first_from_input_3_and_last_from_input_6() -> None:
    fields = read_applicant(
        form(name_field(1)), entry(_1_2="Dr.", _1_3="Jordan", _1_4="Q", _1_6="Sample", _1_8="Jr.")
    )
    assert (fields.first_name, fields.last_name) == ("Jordan", "Sample")


@pytest.mark.parametrize(
    ("typed", "first", "last"),
    [
        ("Jordan Sample", "Jordan", "Sample"),
        ("  Jordan   Sample ", "Jordan", "Sample"),
        ("Mary Ann Sample", "Mary Ann", "Sample"),
        ("Jordan", "Jordan", None),
        ("", None, None),
        ("   ", None, None),
    ],
)
def test_a_simple_name_field_is_split_into_first_and_last(typed: str, first: str | None, last: str | None) -> None:
    simple = form({"id": 1, "type": "name", "label": "Full name", "nameFormat": "simple", "inputs": None})
    fields = read_applicant(simple, entry(_1=typed))
    assert (fields.first_name, fields.last_name) == (first, last)


def test_a_name_field_with_another_id_is_still_read() -> None:
    fields = read_applicant(form(name_field(7)), entry(_7_3="Jordan", _7_6="Sample", _1_3="Wrong", _1_6="Person"))
    assert (fields.first_name, fields.last_name) == ("Jordan", "Sample")


# --- fields by type ------------------------------------------------------------------------------------------------


def test_fields_are_found_by_type_whatever_their_labels_order_or_ids() -> None:
    shuffled = form(
        {"id": 12, "type": "textarea", "label": "Your phone number", "inputs": ""},
        consent_field(3, label="Email preferences"),
        {"id": 40, "type": "phone", "label": "Email address", "inputs": None},
        {"id": 9, "type": "email", "label": "Message", "inputs": None},
        {"id": 21, "type": "text", "label": "Email", "inputs": None},
        {"id": 22, "type": "text", "label": "Phone", "inputs": None},
        name_field(15, label="Who should we ask for?"),
    )
    fields = read_applicant(
        shuffled,
        entry(
            _12="Please call after 5pm.", _3_1="1", _40="212-555-0100", _9="jordan.sample@example.org",
            _21="decoy@example.org", _22="415-555-0199", _15_3="Jordan", _15_6="Sample",
        ),
    )
    assert fields == ApplicantFields(
        first_name="Jordan", last_name="Sample", email="jordan.sample@example.org", phone="212-555-0100",
        message="Please call after 5pm.", consent=True, consent_to_text=None,
    )


def test_a_post_or_quiz_field_is_read_by_its_input_type() -> None:
    post_fields = form(
        {"id": 1, "type": "post_custom_field", "inputType": "email", "label": "Contact"},
        {"id": 2, "type": "post_custom_field", "inputType": "phone", "label": "Best number"},
        {"id": 3, "type": "post_content", "inputType": "textarea", "label": "Story"},
        {"id": 4, "type": "quiz", "inputType": "radio", "label": "May we text you?"},
    )
    fields = read_applicant(
        post_fields, entry(_1="jordan.sample@example.org", _2="(617) 555-0142", _3="Please call.", _4="Yes")
    )
    assert fields.email == "jordan.sample@example.org"
    assert fields.phone == "(617) 555-0142"
    assert fields.message == "Please call."
    assert fields.consent_to_text is True


def test_a_form_with_none_of_the_fields_reads_as_all_none() -> None:
    assert read_applicant(form({"id": 1, "type": "text", "label": "Anything"}), entry(_1="hello")) == ApplicantFields()


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"1.3": "", "1.6": "", "2": "", "3": "", "4": "", "6.1": ""},
        {"1.3": "   ", "1.6": "\n", "2": " ", "3": "\t", "4": "  "},
        {"1.3": None, "1.6": None, "2": None, "3": None, "4": None, "6.1": None},
    ],
)
def test_missing_or_blank_values_read_as_none(values: dict[str, Any]) -> None:
    fields = read_applicant(example_form(), {**entry(), **values})
    assert (fields.first_name, fields.last_name, fields.email, fields.phone, fields.message) == (None,) * 5


@pytest.mark.parametrize("junk", [["617-555-0142"], {"value": "x"}, True, False, [], {}])
def test_non_text_values_read_as_none_rather_than_as_their_repr(junk: Any) -> None:
    simple = form({"id": 8, "type": "name", "label": "Name"}, consent_field(5))
    values = {"1.3": junk, "1.6": junk, "2": junk, "3": junk, "4": junk, "5.1": junk, "6.1": junk, "8": junk}
    for fields in (read_applicant(example_form(), values), read_applicant(simple, values)):
        assert (fields.first_name, fields.last_name, fields.email, fields.phone, fields.message) == (None,) * 5
        assert fields.consent is False


def test_a_number_sent_as_a_json_number_is_read_as_its_digits() -> None:
    assert read_applicant(example_form(), entry(_3=6175550142)).phone == "6175550142"


# --- consent -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ticked", "consent"), [("1", True), ("", False), (None, False)])
def test_consent_is_whether_its_first_input_is_ticked(ticked: str | None, consent: bool) -> None:
    values = {} if ticked is None else {"_5_1": ticked}
    # The description input (.3) is always sent; it says nothing about the box.
    assert read_applicant(form(consent_field(5)), entry(**values, _5_3="1")).consent is consent


@pytest.mark.parametrize(("answer", "text_ok"), [("Yes", True), ("", False)])
def test_an_ok_to_text_me_checkbox_gives_consent_to_text(answer: str, text_ok: bool) -> None:
    checkbox = {
        "id": 11, "type": "checkbox", "label": "OK to text me?",
        "choices": [{"text": "Yes", "value": "Yes"}], "inputs": [{"id": "11.1", "label": "Yes"}],
    }
    fields = read_applicant(form(checkbox), entry(_11_1=answer))
    assert fields.consent_to_text is text_ok
    assert fields.consent is None


def test_a_consent_field_about_texts_gives_consent_to_text_not_consent_to_contact() -> None:
    two_boxes = form(consent_field(5), consent_field(9, label="I agree to receive SMS messages"))
    fields = read_applicant(two_boxes, entry(_5_1="1", _9_1=""))
    assert (fields.consent, fields.consent_to_text) == (True, False)


@pytest.mark.parametrize(("answer", "text_ok"), [("Yes", True), ("yes", True), ("No", False), ("", None)])
def test_a_may_we_text_you_radio_gives_consent_to_text(answer: str, text_ok: bool | None) -> None:
    radio = {"id": 4, "type": "radio", "label": "May we text you?", "choices": [{"text": "Yes"}, {"text": "No"}]}
    assert read_applicant(form(radio), entry(_4=answer)).consent_to_text is text_ok


def test_a_checkbox_that_is_not_about_texts_says_nothing_about_texting() -> None:
    checkbox = {"id": 6, "type": "checkbox", "label": "Insurance on file", "inputs": [{"id": "6.1", "label": "Yes"}]}
    assert read_applicant(form(checkbox), entry(_6_1="Yes")).consent_to_text is None


# --- any entry -----------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
entry_keys = st.sampled_from(["1", "1.3", "1.6", "2", "3", "4", "5.1", "6", "6.1", "7", "id", "form_id"]) | st.text(
    max_size=6
)
simple_name_form = form(
    {"id": 1, "type": "name", "label": "Full name"},
    {"id": 6, "type": "radio", "label": "Can we text?"},
    {"id": 7, "type": "select", "label": "SMS ok"},
)


@PROPERTY
@given(st.dictionaries(entry_keys, json_values, max_size=12), st.sampled_from([example_form(), simple_name_form]))
def test_any_json_entry_reads_without_raising_and_gives_only_text_or_none(values: dict[str, Any], shape: Form) -> None:
    fields = read_applicant(shape, values)
    for text in (fields.first_name, fields.last_name, fields.email, fields.phone, fields.message):
        assert text is None or (isinstance(text, str) and text == text.strip() and text)
    assert fields.consent in (None, True, False)
    assert fields.consent_to_text in (None, True, False)


# --- the models ----------------------------------------------------------------------------------------------------


def test_a_form_object_keeps_what_admitflow_reads_and_ignores_the_rest() -> None:
    parsed = example_form()
    assert parsed.id == "1"
    assert [(field.id, field.effective_type) for field in parsed.fields] == [
        (1, "name"), (2, "email"), (3, "phone"), (4, "textarea"), (5, "consent"), (6, "checkbox"),
    ]
    assert parsed.fields[0].inputs is not None and parsed.fields[0].inputs[0].isHidden
    assert parsed.fields[1].inputs is None


def test_a_field_without_sub_inputs_may_say_so_with_an_empty_string() -> None:
    assert form({"id": "2", "type": "email", "inputs": ""}).fields[0].inputs is None


def test_entry_meta_reads_gravity_forms_dates_as_utc() -> None:
    meta = EntryMeta.model_validate(example_entries()[0])
    assert meta.date_created == datetime(2026, 11, 20, 14, 2, 11, tzinfo=UTC)
    assert (meta.id, meta.form_id, meta.status) == ("101", "1", "active")


@pytest.mark.parametrize("date", ["", None, "yesterday", "2026-13-40 25:61:00", "20/11/2026 14:02"])
def test_an_unreadable_date_does_not_reject_the_entry(date: str | None) -> None:
    assert EntryMeta.model_validate({"id": "101", "form_id": "1", "date_created": date}).date_created is None


@pytest.mark.parametrize("entry_id", ["101", 101, " 101 ", "\t101\n"])
def test_entry_meta_accepts_numeric_ids_as_text_or_number(entry_id: str | int) -> None:
    assert EntryMeta.model_validate({"id": entry_id, "form_id": 1}).id == "101"


@pytest.mark.parametrize(
    "entry_id",
    ["", "abc", "101a", "1 01", "-1", "1.5", 1.5, -1, True, None, [101], {"id": 101}, "1" * 21, "²", "١٠١", "１０１"],
)
def test_entry_meta_rejects_ids_that_are_not_gravity_forms_numeric_ids(entry_id: Any) -> None:
    with pytest.raises(ValidationError):
        EntryMeta.model_validate({"id": entry_id, "form_id": "1"})
    with pytest.raises(ValidationError):
        EntryMeta.model_validate({"id": "101", "form_id": entry_id})


@PROPERTY
@given(st.one_of(st.text(max_size=25), st.integers()))
def test_every_entry_id_it_accepts_is_plain_ascii_digits(entry_id: str | int) -> None:
    try:
        meta = EntryMeta.model_validate({"id": entry_id, "form_id": "1"})
    except ValidationError:
        return
    assert meta.id.isascii() and meta.id.isdigit()
    assert int(meta.id) >= 0


@PROPERTY
@given(st.integers(min_value=0, max_value=10**20 - 1))
def test_every_gravity_forms_id_round_trips(entry_id: int) -> None:
    assert EntryMeta.model_validate({"id": entry_id, "form_id": str(entry_id)}).id == str(entry_id)


def test_a_second_phone_field_is_never_taken_for_the_applicants_own() -> None:
    form = Form.model_validate(
        {
            "id": 3,
            "fields": [
                {"id": 1, "type": "phone", "label": "Your phone"},
                {"id": 2, "type": "phone", "label": "Emergency contact phone"},
            ],
        }
    )

    fields = read_applicant(form, {"id": "1", "form_id": "3", "1": "", "2": "(617) 555-0150"})

    assert fields.phone is None

"""Real-shaped forms and entries (tests/fakes/gravityforms_corpus/): every file shape yields its forms, each form's
mapping picks the person's own fields, and every answer reads as staff should see it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.gravityforms.answers import answers, render, structured
from integrations.gravityforms.exports import FormDocumentError, forms_in, pick_form
from integrations.gravityforms.mapping import infer_mapping, read_applicant
from integrations.gravityforms.models import Form
from tests.support.gf_corpus import FORM_FILES, corpus_entries, corpus_forms, read


def form(form_id: str) -> Form:
    return Form.model_validate(corpus_forms()[form_id])


def entry(entry_id: str) -> dict[str, Any]:
    return next(item for item in corpus_entries() if item["id"] == entry_id)


# --- every shape of form file -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "ids"), [
    ("rest_form_intake.json", ["11"]),
    ("export_single_repeater.json", ["12"]),
    ("export_two_forms.json", ["13", "14"]),
    ("forms_list.json", ["15"]),
])
def test_every_shape_of_form_file_gives_its_forms_in_order(name: str, ids: list[str]) -> None:
    assert [str(found["id"]) for found in forms_in(read(name))] == ids


@pytest.mark.parametrize("name", FORM_FILES)
def test_every_corpus_form_validates_as_a_form_object(name: str) -> None:
    for found in forms_in(read(name)):
        assert Form.model_validate(found).fields


def test_one_form_of_a_multi_form_export_can_be_picked_by_id() -> None:
    forms = forms_in(read("export_two_forms.json"))
    assert [found["id"] for found in pick_form(forms, "14")] == [14]
    with pytest.raises(FormDocumentError, match="this file has no form 99; its forms are 13, 14"):
        pick_form(forms, "99")


@pytest.mark.parametrize("document", [
    {"version": "2.8.3"},
    {"0": {"title": "no fields"}, "version": "2.8.3"},
    [],
    "a form",
    {"total_count": 1, "entries": []},
])
def test_a_file_without_a_form_object_is_refused_saying_what_is_expected(document: Any) -> None:
    with pytest.raises(FormDocumentError, match="Export Forms"):
        forms_in(document)


def test_a_form_without_an_id_is_refused_with_its_title() -> None:
    with pytest.raises(FormDocumentError, match='form #1 in this file \\("Quick callback"\\) has no numeric \'id\''):
        forms_in({"0": {"title": "Quick callback", "fields": []}, "version": "2.4.20"})


# --- mappings ---------------------------------------------------------------------------------------------------------


def test_the_persons_email_ranks_above_a_business_email_before_it() -> None:
    mapping = infer_mapping(form("11"))
    assert [source.input_id for source in mapping.roles["email"]] == ["3", "2"]


def test_contact_fields_under_an_emergency_contact_section_are_never_the_persons() -> None:
    fields = read_applicant(form("11"), {**entry("1101"), "4": ""})
    assert fields.phone is None  # the emergency contact's phone (field 17) is not taken


def test_a_multi_page_form_keeps_the_message_of_the_second_page_when_the_first_textarea_is_empty() -> None:
    fields = read_applicant(form("11"), entry("1101"))
    assert fields.message == "Nobody called me back last week. Please call after 5pm, ask for Avery."


def test_the_textarea_labelled_like_a_message_is_the_message_the_other_an_answer() -> None:
    shape = form("14")
    fields = read_applicant(shape, entry("1401"))
    assert fields.message == "Is treatment confidential from my employer?"
    assert [answer.label for answer in answers(shape.fields, entry("1401"), fields.used)] == [
        "What should we not say in a voicemail?", "Referrer"]


def test_with_only_the_persons_email_filled_the_email_is_read() -> None:
    assert read_applicant(form("14"), entry("1401")).email == "sawyer.example@example.org"


def test_a_work_email_is_the_fallback_when_the_persons_own_is_empty() -> None:
    assert read_applicant(form("11"), entry("1103")).email == "casey@work.example.org"


def test_contacts_inside_a_repeater_are_read_from_its_first_item_with_that_items_name() -> None:
    flat, listed = read_applicant(form("12"), entry("1201")), read_applicant(form("12"), entry("1202"))
    assert (flat.first_name, flat.last_name, flat.phone, flat.email) == (
        "Morgan", "Sample", "(617) 555-0134", "morgan.sample@example.org")
    assert (listed.first_name, listed.email) == ("Reese", "reese.example@example.org")


def test_attribution_comes_from_hidden_fields_by_input_name_then_from_the_pages_query_string() -> None:
    mapping = infer_mapping(form("11"))
    assert mapping.attribution(entry("1101")) == {
        "utm_source": "google", "utm_campaign": "spring-intake", "gclid": "Cj0KCQ-test-gclid", "utm_medium": "email",
        "form_page": "https://clinic.example.org/admissions/?utm_source=newsletter&utm_medium=email",
    }


@pytest.mark.parametrize(("form_id", "warning"), [
    ("11", "2 candidates for email: 3 \"Your email\""),
    ("11", "required field 26 \"Signature\" is of type signature"),
    ("12", "contact fields inside repeater 2"),
    ("14", "2 candidates for message"),
    ("15", "no email field for the person"),
])
def test_the_mapping_warns_of_what_an_operator_should_check(form_id: str, warning: str) -> None:
    assert any(warning in line for line in infer_mapping(form(form_id)).warnings)


def test_a_form_without_phone_or_email_warns_that_every_entry_will_be_flagged() -> None:
    bare = Form.model_validate({"id": 9, "fields": [{"id": 1, "type": "textarea", "label": "Message"}]})
    assert "no phone or email field for the person" in infer_mapping(bare).warnings[0]


def test_an_override_pins_a_role_and_one_naming_no_field_is_a_warning() -> None:
    mapping = infer_mapping(form("14"), {"email": "3", "phone": "99"})
    assert read_applicant(form("14"), entry("1401"), {"email": "3"}).email is None
    assert [source.input_id for source in mapping.roles["email"]] == ["3"]
    assert any('phone = "99" names no field' in line for line in mapping.warnings)


# --- answers as staff read them -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("stored", "rows"), [
    ('a:2:{i:0;s:7:"English";i:1;s:7:"Spanish";}', ["English", "Spanish"]),
    ('a:1:{i:0;a:2:{s:10:"Medication";s:7:"Lithiö";s:4:"Dose";s:3:"1 g";}}', [{"Medication": "Lithiö", "Dose": "1 g"}]),
    ('[["a"],["b"]]', [["a"], ["b"]]),
    ('O:8:"stdClass":0:{}', 'O:8:"stdClass":0:{}'),
    ("a:2:{broken", "a:2:{broken"),
])
def test_stored_lists_are_decoded_from_php_or_json_and_anything_else_is_left_as_text(stored: str, rows: Any) -> None:
    assert structured(stored) == rows


def test_a_multiselect_stored_as_json_text_reads_as_its_choice_labels() -> None:
    field = form("11").fields[11]
    assert render(field, {"12": '["detox","ketamine"]'}) == "Detox, Ketamine therapy"
    assert render(field, {"12": "detox,iop"}) == "Detox, Intensive outpatient"


def test_a_single_product_not_bought_is_no_answer() -> None:
    product = form("11").fields[22]
    assert render(product, {"23.1": "Intake assessment deposit", "23.2": "$25.00", "23.3": ""}) is None


def test_passwords_and_card_numbers_are_never_answers() -> None:
    shape = Form.model_validate({"id": 1, "fields": [
        {"id": 1, "type": "password", "label": "Password"}, {"id": 2, "type": "creditcard", "label": "Card"}]})
    assert list(answers(shape.fields, {"1": "secret", "2.1": "XXXX1111"})) == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, database=None)
@given(st.sampled_from(sorted(corpus_forms())), st.data())
def test_any_values_under_a_corpus_forms_keys_read_as_text_answers_without_raising(form_id: str, data: Any) -> None:
    shape = form(form_id)
    keys = sorted({key for item in corpus_entries() if item["form_id"] == form_id for key in item} | {"2", "13"})
    values = data.draw(st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), json_values, max_size=15))
    fields = infer_mapping(shape).read(values)
    for text in (fields.first_name, fields.last_name, fields.email, fields.phone, fields.message):
        assert text is None or (isinstance(text, str) and text)
    for answer in answers(shape.fields, values):
        assert isinstance(answer.value, str) and answer.value


def test_name_overrides_read_each_part_from_the_input_they_name() -> None:
    shape = form("11")
    fields = read_applicant(shape, entry("1101"), {"first_name": "1.4", "last_name": "16"})
    assert (fields.first_name, fields.last_name) == ("Q", "Rowan Example")

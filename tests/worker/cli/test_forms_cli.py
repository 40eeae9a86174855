"""`admitflow forms add|fetch|show` and `admitflow ingest` with forms in every shape people have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import responses
from click.testing import CliRunner, Result
from sqlalchemy import select

from config.settings import Settings, get_settings
from tests.support.gf_corpus import CORPUS, corpus_entries
from worker.cli import main
from worker.staff.services import default_services
from worker.store.db import session_scope
from worker.store.models import FormDefinition, Lead, Submission

SITE_URL = "https://clinic.example.org"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def registered() -> list[str]:
    with session_scope() as session:
        return sorted(session.scalars(select(FormDefinition.form_id)))


@pytest.mark.parametrize(("name", "ids"), [
    ("rest_form_intake.json", ["11"]),
    ("export_single_repeater.json", ["12"]),
    ("export_two_forms.json", ["13", "14"]),
    ("forms_list.json", ["15"]),
])
def test_forms_add_registers_every_form_of_every_shape_of_file(settings: Settings, name: str, ids: list[str]) -> None:
    result = invoke("forms", "add", str(CORPUS / name))

    assert result.exit_code == 0, result.output
    assert registered() == ids
    for form_id in ids:
        assert f"form {form_id} registered; 0 held submission(s) released" in result.stdout


def test_forms_add_with_form_id_registers_only_that_form_of_an_export(settings: Settings) -> None:
    result = invoke("forms", "add", "--form-id", "14", str(CORPUS / "export_two_forms.json"))

    assert result.exit_code == 0
    assert registered() == ["14"]
    refused = invoke("forms", "add", "--form-id", "7", str(CORPUS / "export_two_forms.json"))
    assert refused.exit_code != 0 and "this file has no form 7; its forms are 13, 14" in refused.output


def test_forms_add_refuses_an_entries_file_saying_what_it_expected(settings: Settings) -> None:
    result = invoke("forms", "add", str(CORPUS / "rest_entries_intake.json"))

    assert result.exit_code != 0
    assert "no Gravity Forms form object in this file" in result.output
    assert registered() == []


def test_forms_add_points_at_forms_show_when_the_mapping_has_warnings(settings: Settings) -> None:
    result = invoke("forms", "add", str(CORPUS / "rest_form_intake.json"))

    assert "form 11 registered; 0 held submission(s) released; 3 warning(s): see `admitflow forms show 11`" in (
        result.stdout)


def test_forms_show_prints_each_role_with_its_fields_best_first_and_the_warnings(settings: Settings) -> None:
    invoke("forms", "add", str(CORPUS / "rest_form_intake.json"))

    output = invoke("forms", "show", "11").stdout

    lines = output.splitlines()
    assert lines[0] == 'form 11 "Confidential admissions inquiry" on site main: 26 fields on 2 page(s)'
    email = next(line for line in lines if line.startswith("email "))
    assert email.index('3 "Your email"') < email.index('2 "Business email"')
    assert next(line for line in lines if line.startswith("message ")).startswith(
        'message          8 "How can we help?" (textarea); then 6 "Medications you take (optional)"')
    assert '17 "Phone" (phone, someone else\'s: never used for the person)' in output
    assert 'utm_source <- 18 "utm_source" (hidden)' in output
    assert '13 "Current medications"' in next(line for line in lines if line.startswith("into the note"))
    assert "- required field 26 \"Signature\" is of type signature" in output


def test_forms_show_of_an_unknown_form_says_how_to_register_it(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["forms", "show", "42"])

    assert result.exit_code != 0
    assert "form 42 is not registered for site main: run `admitflow forms add FORM.json`" in result.output


@responses.activate
def test_forms_fetch_reads_the_form_from_the_sites_rest_api_and_registers_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("GRAVITYFORMS_BASE_URL", SITE_URL), ("GRAVITYFORMS_CONSUMER_KEY", "ck_test"),
                        ("GRAVITYFORMS_CONSUMER_SECRET", "cs_test")):
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    default_services.cache_clear()
    form_object = json.loads((CORPUS / "rest_form_intake.json").read_text())
    responses.get(f"{SITE_URL}/wp-json/gf/v2/forms/11", json=form_object)

    result = invoke("forms", "fetch", "main", "11")

    assert result.exit_code == 0, result.output
    assert registered() == ["11"]
    assert responses.calls[0].request.headers["Authorization"].startswith("Basic ")


def test_forms_fetch_without_api_credentials_says_which_to_set(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["forms", "fetch", "main", "11"])

    assert result.exit_code != 0
    assert "GRAVITYFORMS_BASE_URL, GRAVITYFORMS_CONSUMER_KEY/SECRET or SITES_FILE" in result.output


def test_ingest_takes_an_export_of_several_forms_and_entries_of_each(settings: Settings, tmp_path: Path) -> None:
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps([entry for entry in corpus_entries() if entry["form_id"] in ("13", "14")]))

    result = invoke("ingest", "--form", str(CORPUS / "export_two_forms.json"), str(entries))

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "received 2, new leads 2, merged duplicates 0, rejected 0, already seen 0"
    assert "rejected" not in result.stderr and "warning" not in result.stderr
    with session_scope() as session:
        assert sorted(lead.first_name or "" for lead in session.scalars(select(Lead))) == ["Parker", "Sawyer"]


def test_ingest_of_a_local_number_from_another_country_keeps_the_lead_and_flags_it(
    settings: Settings, tmp_path: Path
) -> None:
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps([entry for entry in corpus_entries() if entry["id"] == "1103"]))

    result = invoke("ingest", "--form", str(CORPUS / "rest_form_intake.json"), str(entries))

    assert "new leads 1" in result.stdout
    with session_scope() as session:
        submission = session.scalars(select(Submission)).one()
        assert submission.state == "processed"
        assert (submission.flag_reason or "").startswith("phone_unparsed:")
    assert "phone_unparsed" in invoke("submissions", "list").stdout

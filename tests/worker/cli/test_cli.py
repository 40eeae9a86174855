from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from config.settings import Settings
from tests.conftest import EXAMPLES, make_entry
from worker.cli import main

FORM = str(EXAMPLES / "form.json")
ENTRIES = str(EXAMPLES / "entries.json")


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_ingest_prints_a_one_line_summary_of_what_happened(settings: Settings) -> None:
    output = run("ingest", "--form", FORM, ENTRIES)

    assert output.strip() == (
        "received 5, new leads 2, merged duplicates 1, rejected 0, already seen 0, flagged 1, spam 1"
    )


def test_ingesting_the_same_entries_again_changes_nothing(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)
    output = run("ingest", "--form", FORM, ENTRIES)

    assert output.strip() == "received 5, new leads 0, merged duplicates 0, rejected 0, already seen 5"


def test_ingest_reads_json_lines_names_each_rejected_entry_and_exits_non_zero(settings: Settings, tmp_path: Path
                                                                              ) -> None:
    lines = tmp_path / "entries.jsonl"
    lines.write_text("\n".join([json.dumps(make_entry(1)), json.dumps({"form_id": "1"}), json.dumps(make_entry(2)),
                                json.dumps({"id": "77", "form_id": "x"})]))

    result = CliRunner().invoke(main, ["ingest", "--form", FORM, str(lines)])

    assert result.exit_code == 1
    assert result.stdout.strip() == "received 4, new leads 1, merged duplicates 1, rejected 2, already seen 0"
    assert "rejected entry #2 in the file: entry has no 'id'" in result.stderr
    assert "rejected entry '77' (#4 in the file): entry field(s) form_id must be Gravity Forms numeric ids" in (
        result.stderr)


def test_ingest_warns_of_entries_of_another_form_than_the_one_given(settings: Settings, tmp_path: Path) -> None:
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps([make_entry(1), make_entry(2, form_id="2"), make_entry(3, form_id="2")]))

    result = CliRunner().invoke(main, ["ingest", "--form", FORM, str(entries)])

    assert result.exit_code == 0
    assert "warning: 2 entries are of form 2, not of --form's form 1" in result.stderr
    assert "flagged 2" in result.stdout


def test_leads_export_writes_one_json_line_per_lead_with_its_submissions(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)

    records = [json.loads(line) for line in run("leads", "export").splitlines()]

    assert len(records) == 2
    jordan = next(r for r in records if r["email"] == "jordan.sample@example.org")
    assert jordan["phone"] == "+16175550142"
    assert jordan["repeat_count"] == 1
    assert jordan["crm_id"] == f"log-contact-{jordan['ref']}"
    assert jordan["submissions"] == [{"form_id": "1", "entry_id": "101"}, {"form_id": "1", "entry_id": "102"}]
    assert {"id", "phone", "email", "repeat_count", "crm_id", "submissions"} <= set(jordan)


def test_leads_export_help_warns_that_the_output_holds_phi(settings: Settings) -> None:
    assert "HOLDS PHI" in run("leads", "export", "--help")


def test_submissions_list_shows_flagged_ones_without_phi(settings: Settings) -> None:
    run("ingest", "--form", FORM, ENTRIES)

    output = run("submissions", "list", "--state", "flagged")

    header, row = output.splitlines()
    assert header.split() == ["ID", "SITE", "FORM", "ENTRY", "SOURCE", "STATE", "LEAD", "FLAG", "REASON"]
    assert row.split()[:6] == ["5", "main", "1", "105", "cli", "flagged"] and "no_contact" in row
    assert "Casey" not in output and "Placeholder" not in output


def test_forms_add_releases_entries_held_for_an_unknown_form(settings: Settings, tmp_path: Path) -> None:
    other_form = json.loads(Path(FORM).read_text())
    other_form["id"] = 2
    form_file = tmp_path / "form2.json"
    form_file.write_text(json.dumps(other_form))
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps([make_entry(1, form_id="2")]))
    run("ingest", "--form", FORM, str(entries))
    assert "unknown_form" in run("submissions", "list", "--state", "flagged")

    output = run("forms", "add", str(form_file))

    assert "1 held submission(s) released" in output
    assert "processed" in run("submissions", "list")


def test_keys_generate_prints_both_variables(settings: Settings) -> None:
    output = run("keys", "generate")
    assert output.startswith("ADMITFLOW_ENCRYPTION_KEYS=") and "\nADMITFLOW_BLIND_INDEX_KEY=" in output


def test_an_operator_can_retry_a_dead_outbox_row_and_drop_another(settings: Settings) -> None:
    from sqlalchemy import select

    from worker.store.db import session_scope
    from worker.store.models import OutboxMessage, OutboxState

    run("ingest", "--form", FORM, ENTRIES)
    with session_scope() as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        rows[0].state, rows[0].last_error = OutboxState.DEAD, "HubSpot refused the credentials: set HUBSPOT_TOKEN"
        rows[1].state = OutboxState.DEAD
        first, second, kind, ref = rows[0].id, rows[1].id, rows[1].kind, rows[1].lead.ref

    assert "queued for delivery" in run("outbox", "retry", str(first))
    assert "dropped" in run("outbox", "drop", str(second))

    with session_scope() as session:
        assert session.get_one(OutboxMessage, first).state == OutboxState.DELIVERED
        dropped = session.get_one(OutboxMessage, second)
        assert dropped.state == OutboxState.DROPPED and "dropped by an operator" in (dropped.last_error or "")
    listing = run("outbox", "list", "--state", "dropped")
    assert [line.split()[:4] for line in listing.splitlines()[1:]] == [[str(second), kind, ref, "dropped"]]
    result = CliRunner().invoke(main, ["outbox", "drop", str(first)])
    assert result.exit_code != 0 and "delivered already" in result.output

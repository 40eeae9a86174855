"""`admitflow leads why`, `merge` and `split` at the command line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from config.settings import Settings
from tests.conftest import EXAMPLES, make_entry
from worker.cli import main
from worker.store.db import session_scope
from worker.store.models import AuditEvent, Lead, Submission

FORM = str(EXAMPLES / "form.json")
# Sarah and her mistyped second request (one slip in a short name), and Morgan, on the same phone: her partner.
SARAH = {"1.3": "Sarah", "1.6": "Okafor", "2": "sarah.okafor@example.org", "3": "(617) 555-0158"}
SAUAH = {**SARAH, "1.3": "Sauah", "date_created": "2026-11-20 19:30:00"}
MORGAN = {"1.3": "Morgan", "1.6": "Okafor", "2": "morgan.okafor@example.org", "3": "(617) 555-0158",
          "ip": "198.51.100.23", "date_created": "2026-11-21 08:00:00"}
PHI = ["Sarah", "Sauah", "Morgan", "Okafor", "555-0158", "5550158", "example.org"]


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def ingest(tmp_path: Path, *entries: dict[str, str]) -> None:
    path = tmp_path / "entries.jsonl"
    path.write_text("\n".join(json.dumps(make_entry(n, **fields)) for n, fields in enumerate(entries, start=1)))
    run("ingest", "--form", FORM, str(path))


def refs() -> dict[str, str]:
    with session_scope() as session:
        return {entry: ref for entry, ref in session.execute(
            select(Submission.entry_id, Lead.ref).join(Lead, Submission.lead_id == Lead.id))}


def test_leads_why_shows_the_evidence_that_joined_and_kept_apart_without_phi(
    settings: Settings, tmp_path: Path
) -> None:
    ingest(tmp_path, SARAH, SAUAH, MORGAN)
    leads = refs()
    assert leads["1"] == leads["2"] != leads["3"]

    output = run("leads", "why", leads["1"])

    assert f"{leads['1']}: new, 2 request(s)" in output
    assert "first name typo" in output and "email same" in output and "phone same" in output
    assert "joined" in output and "score" in output
    assert f"near misses: 1 request(s) of other leads weighed against {leads['1']}" in output
    assert "household guard (two different first names)" in output
    assert "S. O., phone …58, an email" in output
    for value in PHI:
        assert value not in output
    with session_scope() as session:
        assert session.scalars(select(AuditEvent).where(AuditEvent.action == "read")).all() == []


def test_leads_why_with_show_prints_the_details_and_audits_it(settings: Settings, tmp_path: Path) -> None:
    ingest(tmp_path, SARAH, SAUAH)
    ref = refs()["1"]

    output = run("leads", "why", ref, "--show")

    assert "Sauah Okafor +16175550158 sarah.okafor@example.org" in output
    with session_scope() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "read")).one()
        assert event.lead_ref == ref and "names, phones and emails" in (event.detail or "")


def test_leads_merge_and_split_at_the_command_line_are_repeatable(settings: Settings, tmp_path: Path) -> None:
    ingest(tmp_path, SARAH, SAUAH, MORGAN)
    leads = refs()

    first = run("leads", "split", leads["1"], "--submission", "2")
    again = run("leads", "split", leads["1"], "--submission", "2")

    assert "split from" in first and "staff were not texted" in first
    assert "already" in again
    split = refs()["2"]
    assert split != leads["1"]
    assert "merged into" in run("leads", "merge", leads["1"], split)
    assert "already" in run("leads", "merge", leads["1"], split)
    result = CliRunner().invoke(main, ["leads", "merge", leads["1"], "R-NOPE0"])
    assert result.exit_code == 1 and "no lead R-NOPE0" in result.output

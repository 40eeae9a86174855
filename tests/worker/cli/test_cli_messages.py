"""What the CLI says when things are not simple: how a release ended, nothing polled, a broken pipe, a wrong
setting or key. One line each, a meaningful exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import select

from config.settings import Settings, get_settings
from tests.conftest import EXAMPLES, REPO
from worker.cli import main
from worker.staff.services import default_services
from worker.store.db import session_scope
from worker.store.models import AuditEvent, Submission, SubmissionState
from worker.store.phi import reset_vault

FORM, ENTRIES = str(EXAMPLES / "form.json"), str(EXAMPLES / "entries.json")


def invoke(*args: str) -> tuple[int, str]:
    """The exit code, and what the command said: its output, or its one error line (log lines aside)."""
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) <= 1
    return result.exit_code, errors[0] if errors else result.stdout


def submission_in(state: SubmissionState) -> int:
    with session_scope() as session:
        found = session.scalar(select(Submission.id).where(Submission.state == state))
    assert found is not None
    return found


def test_releasing_a_spam_entry_processes_it_and_says_which_lead_it_became(settings: Settings) -> None:
    invoke("ingest", "--form", FORM, ENTRIES)
    spam = submission_in(SubmissionState.SPAM)

    code, output = invoke("submissions", "release", str(spam))

    assert code == 0
    assert output.startswith(f"submission {spam} released from spam: processed as a new lead, R-")
    assert "deliveries handed on" in output


def test_releasing_an_entry_without_a_phone_or_email_says_it_is_flagged_again_and_why(settings: Settings) -> None:
    invoke("ingest", "--form", FORM, ENTRIES)
    flagged = submission_in(SubmissionState.FLAGGED)

    code, output = invoke("submissions", "release", str(flagged))

    assert code == 1
    assert f"submission {flagged} released from flagged, but it is flagged again: no_contact: neither a valid" in output
    with session_scope() as session:
        assert session.get_one(Submission, flagged).state == SubmissionState.FLAGGED


def test_poll_status_says_so_when_no_form_is_polled(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["poll", "status"])

    assert result.exit_code == 0 and result.stdout == ""
    assert "no form is polled: set GRAVITYFORMS_BASE_URL" in result.stderr


def test_an_invalid_setting_is_one_line_naming_it_without_its_value(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMITFLOW_WEB_PORT", "99999")
    monkeypatch.setenv("CALLBACK_CADENCE", "soon-ish")
    get_settings.cache_clear()

    code, output = invoke("submissions", "list")

    assert code == 2
    assert output.startswith("Error: invalid settings: ")
    assert "ADMITFLOW_WEB_PORT: Input should be less than 65536" in output and "CALLBACK_CADENCE" in output


def test_a_value_no_configured_key_opens_is_one_line_naming_the_key_to_restore(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke("ingest", "--form", FORM, ENTRIES)
    monkeypatch.setenv("ADMITFLOW_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    get_settings.cache_clear()
    default_services.cache_clear()
    reset_vault()

    for command in (["submissions", "list"], ["leads", "export"]):
        code, output = invoke(*command)
        assert code == 2 and output.startswith("Error: a stored PHI value needs encryption key ")
        assert "needs encryption key " in output and "restore it from your secret store" in output


def test_an_export_cut_short_by_its_reader_ends_quietly_with_its_audit_rows(settings: Settings) -> None:
    invoke("ingest", "--form", FORM, ENTRIES)
    environment = {**os.environ, "ADMITFLOW_LOG_LEVEL": "WARNING"}
    export = subprocess.Popen([sys.executable, "-m", "worker.cli", "leads", "export"], cwd=REPO, env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert export.stdout is not None and export.stderr is not None
    export.stdout.close()  # `| head -0`: the reader is gone before the first line
    errors = export.stderr.read().decode()
    export.stderr.close()
    assert export.wait(timeout=60) == 0
    assert errors == ""
    with session_scope() as session:
        details = session.scalars(select(AuditEvent.detail).order_by(AuditEvent.id)).all()
    assert details == ["export of 2 leads to stdout started", "0 of 2 leads exported"]

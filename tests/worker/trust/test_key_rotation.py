from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from tests.conftest import TEST_KEYS, make_entry
from tests.worker.leads.test_processing import ingest
from worker.cli import main
from worker.intake.entries import register_form
from worker.staff.services import default_services
from worker.store.models import Lead, Submission
from worker.store.phi import reset_vault

NEW_KEY = Fernet.generate_key().decode()


def raw_tokens(session: Session) -> list[str]:
    leads = session.execute(text("SELECT first_name, phone, email FROM leads")).all()
    payloads = session.execute(text("SELECT payload FROM submissions")).scalars().all()
    return [value for row in leads for value in row if value] + list(payloads)


def test_keys_rotate_re_encrypts_every_phi_value_with_the_new_key_and_resumes_idempotently(
    session: Session, settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    for entry_id, first in ((1, "Avery"), (2, "Blair"), (3, "Casey")):
        ingest(session, settings, make_entry(entry_id, ip=f"198.51.100.{entry_id}", **{
            "1.3": first, "3": f"(617) 555-01{40 + entry_id}", "2": f"p{entry_id}@example.org"}))
    session.close()
    monkeypatch.setenv("ADMITFLOW_ENCRYPTION_KEYS", f"{NEW_KEY},{TEST_KEYS['ADMITFLOW_ENCRYPTION_KEYS']}")
    get_settings.cache_clear()
    default_services.cache_clear()
    reset_vault()

    first = CliRunner().invoke(main, ["keys", "rotate", "--batch", "2"])
    again = CliRunner().invoke(main, ["keys", "rotate"])

    assert first.exit_code == 0, first.output
    # 3 leads x 4 PHI columns (first and last name, phone, email; no other first names known) + 3 raw entries
    assert "checked 15 encrypted value(s), re-encrypted 15 with the newest key" in first.stdout
    assert "re-encrypted 0" in again.stdout
    new_only = Fernet(NEW_KEY.encode())
    for token in raw_tokens(session):
        new_only.decrypt(token.partition(":")[2].encode())  # raises if any value is still under the old key
    monkeypatch.setenv("ADMITFLOW_ENCRYPTION_KEYS", NEW_KEY)
    reset_vault()
    phones = sorted(lead.phone or "" for lead in session.scalars(select(Lead)))
    assert phones == ["+16175550141", "+16175550142", "+16175550143"]
    assert all(sub.payload["form_id"] == "1" for sub in session.scalars(select(Submission)))

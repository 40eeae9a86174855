"""The checks web, worker and beat run before they start (worker/ops/readiness.py), in-process; the same refusals
from the real processes are in tests/integration/test_start_up.py."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from tests.conftest import TEST_KEYS, make_entry
from tests.worker.leads.test_processing import ingest
from worker.intake.entries import register_form
from worker.ops.readiness import NotReady, preflight
from worker.staff.services import default_services
from worker.store.phi import KeyConfigurationError, key_id, reset_vault


def reload(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    default_services.cache_clear()
    reset_vault()
    return get_settings()


@pytest.fixture
def stored_lead(session: Session, settings: Settings, form_object: dict[str, Any]) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    ingest(session, settings, make_entry(1))
    session.close()


def test_every_door_starts_when_configured(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    preflight(settings, "web")
    configured = reload(monkeypatch, CELERY_BROKER_URL="redis://127.0.0.1:6379/1")
    preflight(configured, "worker")
    preflight(configured, "beat")


def test_production_without_keys_refuses_every_door(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADMITFLOW_ENCRYPTION_KEYS")
    production = reload(monkeypatch, ADMITFLOW_ENV="production", CELERY_BROKER_URL="redis://127.0.0.1:6379/1")

    for door in ("web", "worker", "beat"):
        with pytest.raises(KeyConfigurationError, match="ADMITFLOW_ENV=production needs ADMITFLOW_ENCRYPTION_KEYS"):
            preflight(production, door)  # type: ignore[arg-type]


def test_web_refuses_to_start_without_a_webhook_secret(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    without = reload(monkeypatch, GRAVITYFORMS_WEBHOOK_SECRET="")

    with pytest.raises(NotReady, match=r"site main has no webhook secret.*set GRAVITYFORMS_WEBHOOK_SECRET"):
        preflight(without, "web")


def test_worker_and_beat_refuse_to_start_without_a_broker(settings: Settings) -> None:
    for door in ("worker", "beat"):
        with pytest.raises(NotReady, match="CELERY_BROKER_URL is not set"):
            preflight(settings, door)  # type: ignore[arg-type]


def test_production_web_with_twilio_refuses_to_start_without_its_public_url(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    production = reload(monkeypatch, ADMITFLOW_ENV="production", TWILIO_ACCOUNT_SID="AC" + "0" * 32,
                        TWILIO_AUTH_TOKEN="token", TWILIO_FROM_NUMBER="+18555550100")

    with pytest.raises(NotReady, match="ADMITFLOW_PUBLIC_URL is not set"):
        preflight(production, "web")


@pytest.mark.usefixtures("stored_lead")
def test_a_door_refuses_keys_that_cannot_read_what_is_stored_naming_the_key_it_needs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_id = key_id(base64.urlsafe_b64decode(TEST_KEYS["ADMITFLOW_ENCRYPTION_KEYS"]))
    wrong = reload(monkeypatch, ADMITFLOW_ENCRYPTION_KEYS=Fernet.generate_key().decode())

    with pytest.raises(NotReady, match=f"needs encryption key {stored_id}, which is not configured"):
        preflight(wrong, "web")


@pytest.mark.usefixtures("stored_lead")
def test_a_door_refuses_a_blind_index_key_that_would_make_returning_people_new_leads(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = base64.urlsafe_b64encode(b"another-blind-index-key-of-32-bytes!!").decode()
    wrong = reload(monkeypatch, ADMITFLOW_BLIND_INDEX_KEY=other)

    with pytest.raises(NotReady, match="not the key the stored dedup digests were made with"):
        preflight(wrong, "web")

    rotating = reload(monkeypatch, ADMITFLOW_BLIND_INDEX_KEY=f"{other},{TEST_KEYS['ADMITFLOW_BLIND_INDEX_KEY']}")
    preflight(rotating, "web")


def test_the_embedded_default_makes_its_key_file_with_a_new_database_and_never_a_second_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.chdir(tmp_path)  # an old key file where the tests were started from is not this test's
    home = tmp_path / "home"
    monkeypatch.delenv("ADMITFLOW_ENCRYPTION_KEYS")
    monkeypatch.delenv("ADMITFLOW_BLIND_INDEX_KEY")
    monkeypatch.delenv("ADMITFLOW_KEY_FILE")
    embedded = reload(monkeypatch, ADMITFLOW_HOME=str(home), DATABASE_URL="")
    preflight(embedded, "web")
    key_file = home / "phi-keys.json"
    assert key_file.exists() and (home / "admitflow.db").exists()
    assert key_file.stat().st_mode & 0o777 == 0o600

    key_file.rename(tmp_path / "elsewhere.json")
    reset_vault()
    with pytest.raises(KeyConfigurationError, match=f"the key file {key_file} is missing: restore it"):
        preflight(embedded, "web")
    assert not key_file.exists()

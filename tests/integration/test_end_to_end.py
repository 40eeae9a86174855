"""The whole path on what we run ourselves: the real web server, a real Celery worker on Redis, PostgreSQL.

HubSpot and Twilio are a loopback fake (tests/fakes/providers.py) because the worker runs in another process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import func, select

from config.settings import Settings
from tests.conftest import EXAMPLES, REPO, TEST_KEYS, WEBHOOK_SECRET, configure_environment, make_entry
from tests.fakes.providers import FakeProviders
from tests.support.processes import free_port, healthy, wait_for
from worker.intake.entries import register_form
from worker.staff.roster import load_roster
from worker.store.db import session_scope, utcnow
from worker.store.models import Lead, OutboxMessage, OutboxState, Submission

pytestmark = pytest.mark.services

TWILIO_SID = "AC" + "0" * 30 + "42"
CENTER_NUMBER = "+18555550100"


@dataclass
class Stack:
    web_url: str
    providers: FakeProviders
    settings: Settings
    logs: list[Path]
    env: dict[str, str]

    def post(self, entry: dict[str, Any]) -> requests.Response:
        return requests.post(
            f"{self.web_url}/hooks/gravityforms",
            data=json.dumps(entry),
            headers={"X-Admitflow-Secret": WEBHOOK_SECRET, "Content-Type": "application/json"},
            timeout=10,
        )

    def all_delivered(self) -> bool:
        with session_scope() as session:
            received = session.scalar(
                select(func.count()).select_from(Submission).where(Submission.state == "received")
            )
            pending = session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state != OutboxState.DELIVERED)
            )
            total = session.scalar(select(func.count()).select_from(OutboxMessage))
        return received == 0 and pending == 0 and bool(total)

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs if path.exists())


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *args], env=env, stdout=handle, stderr=subprocess.STDOUT
        )


def provider_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, redis_url: str, providers: FakeProviders,
    **extra_env: str,
) -> tuple[Settings, dict[str, str]]:
    """Settings and a subprocess environment for the real stack with HubSpot and Twilio faked on loopback, on an
    empty Redis database, with the example form registered."""
    redis.Redis.from_url(redis_url).flushdb()
    extra = {
        "CELERY_BROKER_URL": redis_url,
        "HUBSPOT_TOKEN": "pat-na1-test-token",
        "HUBSPOT_BASE_URL": providers.url,
        "HUBSPOT_SEARCH_LAG_SECONDS": "0",  # the loopback fake's search shows a record as soon as it is stored
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": "test-auth-token",
        "TWILIO_FROM_NUMBER": CENTER_NUMBER,
        "TWILIO_API_BASE_URL": providers.url,
        "ADMITFLOW_LOG_LEVEL": "INFO",
        **extra_env,
    }
    settings = configure_environment(monkeypatch, tmp_path, database_url, **extra)
    with session_scope() as session:
        register_form(session, site=settings.site, form_object=json.loads((EXAMPLES / "form.json").read_text()))
    return settings, {**os.environ, **TEST_KEYS}


@pytest.fixture
def stack(
    pg_settings: Settings, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    with FakeProviders() as providers:
        settings, env = provider_environment(monkeypatch, tmp_path, pg_settings.database_url, redis_url, providers)
        port = free_port()
        logs = [tmp_path / "web.log", tmp_path / "worker.log"]
        # Two server processes, as production may run them: both must store, hand on and log the same way.
        web = _start(["web", "--port", str(port), "--workers", "2"], env, logs[0])
        worker = _start(["worker", "--concurrency", "4"], env, logs[1])
        built = Stack(f"http://127.0.0.1:{port}", providers, settings, logs, env)
        try:
            wait_for(lambda: healthy(built.web_url), timeout=30, what="the web server's /healthz")
            yield built
        finally:
            for process in (web, worker):
                process.terminate()
            for process in (web, worker):
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


def test_a_webhook_becomes_one_hubspot_contact_note_and_task_and_one_staff_sms(stack: Stack) -> None:
    canary = {"1.3": "Zebulonia", "1.6": "Quillfeather", "2": "zeb.canary@example.org", "3": "(617) 555-0199",
              "4": "canary-message: I have been struggling"}
    response = stack.post(make_entry(501, **canary))
    assert response.status_code == 202

    wait_for(stack.all_delivered, what="the outbox to drain")

    state = stack.providers.state
    [contact] = state.contacts.values()
    assert contact["properties"]["email"] == "zeb.canary@example.org"
    assert contact["properties"]["phone"] == "+16175550199"
    assert contact["properties"]["firstname"] == "Zebulonia"
    [note] = state.notes.values()
    assert "canary-message" in note["properties"]["hs_note_body"]
    [task] = state.tasks.values()
    with session_scope() as session:
        lead = session.scalars(select(Lead)).one()
        assert lead.crm_contact_id in state.contacts and lead.crm_task_id in state.tasks
        ref = lead.ref
    assert task["properties"]["hs_task_subject"] == f"Callback {ref}"
    # Who is on call depends on the example roster's shifts and the time the test runs.
    on_call = load_roster(REPO / "config" / "roster.example.toml").on_call_staff(utcnow())[0]
    assert task["properties"]["hubspot_owner_id"] == on_call.crm_owner_id
    [sms] = state.sms
    assert (sms["To"], sms["From"]) == (on_call.phone, CENTER_NUMBER)
    assert ref in sms["Body"]
    logs = stack.log_text()
    for phi in ("Zebulonia", "Quillfeather", "zeb.canary", "5550199", "canary-message"):
        assert phi not in sms["Body"]
        assert phi not in logs, f"{phi!r} reached a log line"


def test_one_entry_posted_twice_and_ingested_by_the_cli_is_one_lead(stack: Stack, tmp_path: Path) -> None:
    entry = make_entry(601)
    assert stack.post(entry).status_code == 202
    assert stack.post(entry).json()["status"] == "already received"
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps([entry]))
    ingest = subprocess.run(
        [sys.executable, "-m", "worker.cli", "ingest", "--form", str(EXAMPLES / "form.json"), str(entries)],
        env=stack.env, capture_output=True, text=True, timeout=60, check=True,
    )
    assert "already seen 1" in ingest.stdout

    wait_for(stack.all_delivered, what="the outbox to drain")

    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Submission)) == 1
        assert session.scalar(select(func.count()).select_from(Lead)) == 1
    assert len(stack.providers.state.contacts) == 1
    assert len(stack.providers.state.tasks) == 1
    assert len(stack.providers.state.sms) == 1


def test_twenty_concurrent_posts_from_one_person_are_one_lead_one_contact_one_task(stack: Stack) -> None:
    entries = [
        make_entry(700 + n, **{"3": phone, "2": email})
        for n, (phone, email) in enumerate(
            [("617-555-0142", "Jordan.Sample@example.org"), ("(617) 555 0142", "jordan.sample@example.org ")] * 10
        )
    ]
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda entry: stack.post(entry).status_code, entries))
    assert statuses == [202] * 20

    wait_for(stack.all_delivered, timeout=60, what="the outbox to drain")

    with session_scope() as session:
        [lead] = session.scalars(select(Lead)).all()
        assert lead.repeat_count == 19
        assert session.scalar(select(func.count()).select_from(Submission).where(Submission.lead_id == lead.id)) == 20
    state = stack.providers.state
    assert len(state.contacts) == 1
    assert len(state.tasks) == 1
    assert len(state.notes) == 20
    assert len(state.sms) == 1, "a burst from one person must not flood the on-call phone"

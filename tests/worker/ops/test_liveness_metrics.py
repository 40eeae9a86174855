from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from tests.conftest import WEBHOOK_SECRET
from worker.intake.entries import register_form
from worker.ops import liveness
from worker.ops.rejections import Rejections
from worker.store.db import session_scope, utcnow
from worker.web.app import create_app


@pytest.fixture
def client(settings: Settings, form_object: dict[str, Any]) -> Iterator[TestClient]:
    with session_scope() as session:
        register_form(session, site=settings.site, form_object=form_object)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def samples(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = client.get("/metrics").text
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples if sample.name == name}


def test_routine_runs_and_beats_heartbeat_age_are_metrics(client: TestClient) -> None:
    with session_scope() as session:
        liveness.record_run(session, liveness.HEARTBEAT, utcnow() - timedelta(seconds=40))
        liveness.record_run(session, liveness.SWEEP, utcnow(), items=3)
        liveness.record_run(session, liveness.SWEEP, utcnow(), items=2)

    assert samples(client, "admitflow_routine_runs_total") == {(("task", "heartbeat"),): 1, (("task", "sweep"),): 2}
    assert samples(client, "admitflow_routine_items_total")[(("task", "sweep"),)] == 5
    (age,) = samples(client, "admitflow_beat_heartbeat_age_seconds").values()
    assert 40 <= age < 60


def test_refused_webhooks_are_counted_by_reason_and_logged_without_what_was_sent(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = {"X-Admitflow-Secret": WEBHOOK_SECRET, "Content-Type": "application/json"}
    client.post("/hooks/gravityforms", content=b'{"id": "1"}')
    client.post("/hooks/gravityforms", content=b'{"id": "1"}', headers={"X-Admitflow-Secret": "guess"})
    client.post("/hooks/gravityforms", content=b"{not json", headers=secret)
    client.post("/hooks/gravityforms", content=b'{"form_id": "1", "2": "pat.sample@example.org"}', headers=secret)
    client.post("/hooks/gravityforms", content=b"x" * 300_000, headers=secret)
    client.post("/hooks/gravityforms/nowhere", content=b"{}", headers=secret)
    client.post("/hooks/twilio/sms", data={"From": "+16175550101", "Body": "1"})

    rejections: Rejections = client.app.state.rejections  # type: ignore[attr-defined]
    rejections.flush()  # what the app does every FLUSH_SECONDS

    counted = samples(client, "admitflow_webhooks_rejected_total")
    assert counted == {
        (("door", "gravityforms"), ("reason", "bad_secret"), ("status", "401")): 2,
        (("door", "gravityforms"), ("reason", "not_json"), ("status", "400")): 1,
        (("door", "gravityforms"), ("reason", "invalid_entry"), ("status", "422")): 1,
        (("door", "gravityforms"), ("reason", "too_large"), ("status", "413")): 1,
        (("door", "gravityforms"), ("reason", "unknown_site"), ("status", "404")): 1,
        (("door", "twilio"), ("reason", "not_configured"), ("status", "403")): 1,
    }
    lines = [record.getMessage() for record in caplog.records if record.name == "worker.ops.rejections"]
    assert len(lines) == 7 and all(line.startswith("refused a ") for line in lines)
    assert not any("pat.sample" in line or "example.org" in line for line in lines)

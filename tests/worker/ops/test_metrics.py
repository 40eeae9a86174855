from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.conftest import EXAMPLES, WEBHOOK_SECRET
from tests.fakes.speed import alerted_lead, claimed_lead
from worker.intake.entries import register_form
from worker.ops.metrics import queue_depth
from worker.store.db import session_scope, utcnow
from worker.store.models import OutboxKind, OutboxMessage, OutboxState
from worker.web.app import create_app

AUTH = {"X-Admitflow-Secret": WEBHOOK_SECRET}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def client(settings: Settings, form_object: dict[str, Any]) -> Iterator[TestClient]:
    with session_scope() as session:
        register_form(session, site=settings.site, form_object=form_object)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_the_example_entries_received_by_webhook_and_how_they_ended(client: TestClient) -> None:
    entries = json.loads((EXAMPLES / "entries.json").read_text())["entries"]
    for entry in entries:
        assert client.post("/hooks/gravityforms", json=entry, headers=AUTH).status_code == 202

    samples = scrape(client)

    assert value(samples, "admitflow_submissions_received_total", source="webhook") == 5
    assert value(samples, "admitflow_submissions", state="processed") == 3
    assert value(samples, "admitflow_submissions", state="flagged") == 1
    assert value(samples, "admitflow_submissions", state="spam") == 1
    assert value(samples, "admitflow_outbox_attempts_total", kind="crm_sync", outcome="delivered") == 3
    assert value(samples, "admitflow_outbox_attempts_total", kind="staff_alert", outcome="delivered") == 2
    assert value(samples, "admitflow_outbox_attempts_total", kind="staff_alert", outcome="retry") == 0
    assert value(samples, "admitflow_time_to_alert_seconds_count") == 2
    assert value(samples, "admitflow_unclaimed_leads") == 2
    assert value(samples, "admitflow_dead_letters") == 0


def test_metrics_show_retries_dead_letters_and_the_backlog_by_state(client: TestClient, session: Session) -> None:
    lead = alerted_lead(session, "R-MTR01", utcnow() - timedelta(minutes=3))
    sync = OutboxMessage(kind=OutboxKind.CRM_SYNC, lead_id=lead.id, submission_id=lead.submissions[0].id,
                         state=OutboxState.DEAD, attempts=12)
    session.add(sync)
    session.commit()
    retrying = alerted_lead(session, "R-MTR02", utcnow() - timedelta(minutes=2))
    session.add(OutboxMessage(kind=OutboxKind.CRM_SYNC, lead_id=retrying.id,
                              submission_id=retrying.submissions[0].id, state=OutboxState.PENDING, attempts=3))
    session.commit()

    samples = scrape(client)

    assert value(samples, "admitflow_outbox_attempts_total", kind="crm_sync", outcome="dead") == 1
    assert value(samples, "admitflow_outbox_attempts_total", kind="crm_sync", outcome="retry") == 11 + 3
    assert value(samples, "admitflow_outbox_rows", kind="crm_sync", state="pending") == 1
    assert value(samples, "admitflow_outbox_rows", kind="staff_alert", state="delivered") == 2
    assert value(samples, "admitflow_dead_letters") == 1
    assert value(samples, "admitflow_staff_alerts_total", channel="sms", status="delivered") == 2


def test_time_to_alert_and_time_to_claim_fall_in_the_right_buckets(client: TestClient, session: Session) -> None:
    start = utcnow() - timedelta(hours=1)
    claimed_lead(session, "R-HST01", start, "Avery Example", claim_after=timedelta(seconds=50))
    claimed_lead(session, "R-HST02", start, "Avery Example", claim_after=timedelta(minutes=8))
    claimed_lead(session, "R-HST03", start, "Blake Example", claim_after=timedelta(minutes=40))
    session.commit()

    samples = scrape(client)

    assert value(samples, "admitflow_time_to_claim_seconds_bucket", le="60.0") == 1
    assert value(samples, "admitflow_time_to_claim_seconds_bucket", le="600.0") == 2
    assert value(samples, "admitflow_time_to_claim_seconds_bucket", le="3600.0") == 3
    assert value(samples, "admitflow_time_to_claim_seconds_bucket", le="+Inf") == 3
    assert value(samples, "admitflow_time_to_claim_seconds_sum") == 50 + 480 + 2400
    assert value(samples, "admitflow_time_to_alert_seconds_bucket", le="30.0") == 3
    assert value(samples, "admitflow_unclaimed_leads") == 0


def test_metrics_carry_no_lead_reference_or_staff_name(client: TestClient, session: Session) -> None:
    claimed_lead(session, "R-PRV01", utcnow() - timedelta(minutes=9), "Avery Example", claim_after=timedelta(minutes=1))
    session.commit()

    text = client.get("/metrics").text

    assert "R-PRV01" not in text
    assert "Avery" not in text
    assert "+1617" not in text


def test_queue_depth_is_read_only_from_a_redis_broker() -> None:
    assert queue_depth("") is None
    assert queue_depth("amqp://guest@127.0.0.1//") is None


@pytest.mark.services
def test_queue_depth_counts_new_work_and_the_crms_waiting_work_in_redis(redis_url: str) -> None:
    import redis

    connection = redis.Redis.from_url(redis_url)
    connection.delete("admitflow", "admitflow-crm", "admitflow-routine")
    connection.rpush("admitflow", "a", "b", "c")
    connection.rpush("admitflow-crm", "d", "e")
    connection.rpush("admitflow-routine", "f")  # beat's routines: not work waiting
    try:
        assert queue_depth(redis_url) == 5
    finally:
        connection.delete("admitflow", "admitflow-crm", "admitflow-routine")

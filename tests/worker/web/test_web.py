from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.conftest import WEBHOOK_SECRET, make_entry
from worker.intake.entries import register_form
from worker.store.db import session_scope
from worker.store.models import Lead, StaffAlert, Submission, SubmissionState
from worker.web.app import create_app

AUTH = {"X-Admitflow-Secret": WEBHOOK_SECRET}


@pytest.fixture
def client(settings: Settings, form_object: dict[str, Any]) -> Iterator[TestClient]:
    with session_scope() as session:
        register_form(session, site=settings.site, form_object=form_object)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def count(session: Session, model: type[Any]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_it_refuses_a_webhook_without_the_secret_header(client: TestClient, session: Session) -> None:
    missing = client.post("/hooks/gravityforms", json=make_entry(1))
    wrong = client.post("/hooks/gravityforms", json=make_entry(1), headers={"X-Admitflow-Secret": "guess"})

    assert missing.status_code == wrong.status_code == 401
    assert "X-Admitflow-Secret" in missing.json()["error"]
    assert count(session, Submission) == 0


def test_it_refuses_every_webhook_when_no_secret_is_configured(settings: Settings) -> None:
    unset = settings.model_copy(update={"webhook_secret": None})
    with TestClient(create_app(unset)) as client:
        response = client.post("/hooks/gravityforms", json=make_entry(1), headers={"X-Admitflow-Secret": ""})
    assert response.status_code == 401


def test_it_stores_and_processes_an_entry_and_answers_202(client: TestClient, session: Session) -> None:
    response = client.post("/hooks/gravityforms", json=make_entry(1), headers=AUTH)

    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    submission = session.scalars(select(Submission)).one()
    assert (submission.form_id, submission.entry_id, submission.source) == ("1", "1", "webhook")
    assert submission.state == SubmissionState.PROCESSED
    assert count(session, Lead) == 1
    assert count(session, StaffAlert) == 1


def test_the_same_entry_posted_twice_is_one_submission_and_one_alert(client: TestClient, session: Session) -> None:
    first = client.post("/hooks/gravityforms", json=make_entry(1), headers=AUTH)
    second = client.post("/hooks/gravityforms", json=make_entry(1), headers=AUTH)

    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["status"] == "already received"
    assert (count(session, Submission), count(session, Lead), count(session, StaffAlert)) == (1, 1, 1)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"id": "1", "form_id": ', 400, "not valid JSON"),
        (b"\xff\xfe{}", 400, "not UTF-8"),
        (b'["a list"]', 422, "JSON object"),
        (b'{"form_id": "1", "1.3": "Jordan"}', 422, "no 'id'"),
        (b'{"id": "1"}', 422, "no 'form_id'"),
        (b'{"id": "abc", "form_id": "1"}', 422, "numeric ids"),
        (b'{"x": "' + b"a" * 300_000 + b'"}', 413, "body over"),
    ],
    ids=["truncated", "not-utf8", "not-an-object", "no-id", "no-form-id", "non-numeric-id", "oversized"],
)
def test_it_rejects_bad_bodies_with_a_precise_message_and_stores_nothing(
    client: TestClient, session: Session, body: bytes, status: int, says: str
) -> None:
    response = client.post(
        "/hooks/gravityforms", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )

    assert response.status_code == status
    assert says in response.json()["error"]
    assert count(session, Submission) == 0


def test_deeply_nested_json_within_the_size_limit_is_a_400_not_a_crash(client: TestClient, session: Session) -> None:
    body = b"[" * 50_000 + b"]" * 50_000
    response = client.post("/hooks/gravityforms", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code in (400, 422)
    assert count(session, Submission) == 0


def test_an_entry_of_an_unknown_form_is_kept_and_answered_422(client: TestClient, session: Session) -> None:
    response = client.post("/hooks/gravityforms", json=make_entry(1, form_id="9"), headers=AUTH)

    assert response.status_code == 422
    assert "form 9 is not registered" in response.json()["error"]
    submission = session.scalars(select(Submission)).one()
    assert submission.state == SubmissionState.FLAGGED


def test_error_answers_never_echo_what_the_person_typed(client: TestClient) -> None:
    body = json.dumps({"form_id": "1", "1.3": "Zebulon-canary"}).encode()
    response = client.post("/hooks/gravityforms", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert "Zebulon" not in response.text


def test_healthz_reports_each_dependency_and_that_work_runs_inline(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready" and body["accepting_webhooks"] is True
    assert list(body["checks"]) == ["database", "schema", "keys", "webhook_secret", "broker", "beat"]
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["schema"]["detail"].startswith("current (")
    assert body["checks"]["broker"]["detail"].startswith("none: work runs inline")


def test_healthz_is_503_when_the_broker_is_unreachable(settings: Settings) -> None:
    broken = settings.model_copy(update={"celery_broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready" and body["accepting_webhooks"] is True
    assert body["checks"]["broker"] == {"ok": False, "detail": "the broker is unreachable (OperationalError): "
                                        "check CELERY_BROKER_URL and that Redis is running"}

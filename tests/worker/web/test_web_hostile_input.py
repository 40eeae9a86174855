"""Hostile bodies on the Gravity Forms webhook: each is a clear 4xx or a stored (and, where it must be, flagged)
entry; never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.conftest import WEBHOOK_SECRET, make_entry
from worker.intake.entries import register_form
from worker.store.db import session_scope
from worker.store.models import Submission, SubmissionState
from worker.web.app import create_app

AUTH = {"X-Admitflow-Secret": WEBHOOK_SECRET, "Content-Type": "application/json"}


@pytest.fixture
def client(settings: Settings, form_object: dict[str, Any]) -> Iterator[TestClient]:
    with session_scope() as session:
        register_form(session, site=settings.site, form_object=form_object)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b'{"id": "1", "form_id": "1", "1.3": "\xc3\x28"}',
        b'{"id": "1", "form_id": "1", "1.3": "Jor\x00dan"}',
        b"\x00" * 64,
        b'{"id": "1\\u0000", "form_id": "1"}',
    ],
    ids=["deep-json", "invalid-utf8", "raw-nul-in-string", "only-nul-bytes", "nul-in-entry-id"],
)
def test_a_malformed_body_is_a_4xx_and_stores_nothing(client: TestClient, session: Session, body: bytes) -> None:
    response = client.post("/hooks/gravityforms", content=body, headers=AUTH)

    assert 400 <= response.status_code < 500
    assert "error" in response.json()
    assert session.scalars(select(Submission)).all() == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"1.3": "Jor\u0000dan"},
        {"1.3": "\u202eNADROJ", "1.6": "Sam\u202dple"},
        {"1.3": "Jor\u200bdan", "1.6": "Sam\ufeffple"},
        {"4": "\u0000" * 100},
        {"1.3": "<script>alert(1)</script>"},
        {"1.6": "O'Brien; DROP TABLE leads;--"},
    ],
    ids=["escaped-nul-in-name", "rtl-override", "zero-width", "nul-message", "script-name", "sql-metacharacters"],
)
def test_a_hostile_name_or_message_is_stored_and_processed_or_flagged_never_a_5xx(
    client: TestClient, session: Session, overrides: dict[str, str]
) -> None:
    response = client.post("/hooks/gravityforms", content=json.dumps(make_entry(7, **overrides)), headers=AUTH)

    assert response.status_code == 202, response.text
    submission = session.scalars(select(Submission)).one()
    assert submission.state in (SubmissionState.PROCESSED, SubmissionState.FLAGGED)
    assert submission.payload["1.3"] == make_entry(7, **overrides)["1.3"]


def test_a_script_in_a_name_is_flagged_for_an_operator(client: TestClient, session: Session) -> None:
    client.post("/hooks/gravityforms", content=json.dumps(make_entry(8, **{"1.3": "<script>x</script>"})),
                headers=AUTH)

    assert session.scalars(select(Submission)).one().state == SubmissionState.FLAGGED

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.settings import Settings
from config.sites import SitesError, load_sites
from tests.conftest import make_entry
from worker.intake.entries import register_form
from worker.intake.webhook_signing import TOLERANCE, record_delivery, sign
from worker.store.db import session_scope, utcnow
from worker.store.models import SeenWebhook, Submission
from worker.web.app import create_app

SECRET = "whsec_" + base64.b64encode(b"fictional-signing-key-32-bytes!!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-fictional-key-32-bytes!!").decode()


@pytest.fixture
def client(settings: Settings, form_object: dict[str, Any]) -> Iterator[TestClient]:
    with session_scope() as session:
        register_form(session, site=settings.site, form_object=form_object)
    signed = settings.model_copy(update={"gravityforms_signing_secret": SecretStr(SECRET)})
    with TestClient(create_app(signed)) as test_client:
        yield test_client


def signed_headers(
    body: bytes, webhook_id: str = "msg_1", at: int | None = None, secret: str = SECRET
) -> dict[str, str]:
    timestamp = int(time.time()) if at is None else at
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
        "Content-Type": "application/json",
    }


def submissions(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Submission)) or 0


def body_of(entry_id: int) -> bytes:
    return json.dumps(make_entry(entry_id)).encode()


def test_a_validly_signed_webhook_is_accepted_without_the_static_secret(client: TestClient, session: Session) -> None:
    body = body_of(1)
    response = client.post("/hooks/gravityforms", content=body, headers=signed_headers(body))

    assert response.status_code == 202
    assert submissions(session) == 1


def test_a_signature_among_several_is_enough(client: TestClient) -> None:
    body = body_of(1)
    headers = signed_headers(body)
    headers["webhook-signature"] = "v1,bm90LXRoaXMtb25l " + headers["webhook-signature"]

    assert client.post("/hooks/gravityforms", content=body, headers=headers).status_code == 202


def test_a_tampered_body_is_refused(client: TestClient, session: Session) -> None:
    headers = signed_headers(body_of(1))
    response = client.post("/hooks/gravityforms", content=body_of(2), headers=headers)

    assert response.status_code == 401
    assert response.json() == {"error": "webhook-signature does not match"}
    assert submissions(session) == 0


def test_a_webhook_signed_with_another_secret_is_refused(client: TestClient, session: Session) -> None:
    body = body_of(1)
    response = client.post("/hooks/gravityforms", content=body, headers=signed_headers(body, secret=OTHER_SECRET))

    assert response.status_code == 401
    assert submissions(session) == 0


@pytest.mark.parametrize("offset", [-int(TOLERANCE.total_seconds()) - 5, int(TOLERANCE.total_seconds()) + 5])
def test_a_timestamp_outside_five_minutes_is_refused(client: TestClient, session: Session, offset: int) -> None:
    body = body_of(1)
    response = client.post("/hooks/gravityforms", content=body,
                           headers=signed_headers(body, at=int(time.time()) + offset))

    assert response.status_code == 401
    assert "outside the accepted window" in response.json()["error"]
    assert submissions(session) == 0


def test_a_replayed_webhook_id_is_refused_with_409(client: TestClient, session: Session) -> None:
    body = body_of(1)
    headers = signed_headers(body)
    first = client.post("/hooks/gravityforms", content=body, headers=headers)
    replay = client.post("/hooks/gravityforms", content=body, headers=headers)

    assert (first.status_code, replay.status_code) == (202, 409)
    assert replay.json() == {"error": "this webhook-id was already received"}
    assert submissions(session) == 1


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_webhook_missing_a_signature_header_is_refused(client: TestClient, session: Session, missing: str) -> None:
    body = body_of(1)
    headers = {name: value for name, value in signed_headers(body).items() if name != missing}
    response = client.post("/hooks/gravityforms", content=body, headers=headers)

    assert response.status_code == 401
    assert response.json() == {"error": "missing webhook-id, webhook-timestamp or webhook-signature header"}
    assert submissions(session) == 0


def test_the_static_secret_header_alone_is_not_enough_once_signing_is_configured(client: TestClient) -> None:
    response = client.post("/hooks/gravityforms", json=make_entry(1), headers={"X-Admitflow-Secret": "anything"})

    assert response.status_code == 401


def test_a_non_numeric_timestamp_is_a_400(client: TestClient) -> None:
    body = body_of(1)
    headers = {**signed_headers(body), "webhook-timestamp": "yesterday"}

    assert client.post("/hooks/gravityforms", content=body, headers=headers).status_code == 400


def test_seen_webhook_ids_are_forgotten_after_twice_the_tolerance(settings: Settings, session: Session) -> None:
    long_ago = utcnow() - 3 * TOLERANCE
    record_delivery("main", "msg_old", long_ago)
    record_delivery("main", "msg_new", utcnow())

    assert session.scalars(select(SeenWebhook.webhook_id)).all() == ["msg_new"]


def test_a_site_in_the_sites_file_gets_its_signing_secret_from_the_variable_it_names(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sites_file = tmp_path / "sites.toml"
    sites_file.write_text('[[site]]\nname = "north"\nsigning_secret_env = "NORTH_SIGNING"\npoll = false\n')
    monkeypatch.setenv("NORTH_SIGNING", SECRET)
    (site,) = load_sites(settings.model_copy(update={"sites_file": sites_file}))
    assert site.signing_secret == SECRET

    monkeypatch.setenv("NORTH_SIGNING", "not-a-whsec-secret")
    with pytest.raises(SitesError, match="whsec_"):
        load_sites(settings.model_copy(update={"sites_file": sites_file}))

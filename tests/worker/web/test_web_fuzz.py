"""Property-based fuzzing of every HTTP endpoint: whatever arrives (any JSON, any bytes, any form fields, correctly
signed or not), the answer is a clear 2xx/4xx, never a 5xx, and a webhook that is refused stores nothing."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from config.settings import Settings
from tests.conftest import WEBHOOK_SECRET, make_entry
from tests.fakes.admissions import alert_services, twilio_settings
from tests.fakes.twilio import signed_post
from worker.intake.entries import register_form
from worker.store.db import session_scope
from worker.store.models import Submission
from worker.web.app import create_app

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
AUTH = {"X-Admitflow-Secret": WEBHOOK_SECRET, "Content-Type": "application/json"}

# Text a person could type, and worse: controls, NUL, RTL overrides, zero-width, lone surrogates are left to JSON.
hostile_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300) | st.sampled_from([
    "=HYPERLINK(\"https://example.org\")", "<script>alert(1)</script>", "'; DROP TABLE leads;--", "\u202eevil",
    "Jor\u200bdan", "\x00", "+1 900 555 0199", "+44 871 555 0199", "0", "", " " * 50,
])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | hostile_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(hostile_text, children, max_size=5),
    max_leaves=25,
)
# Entries shaped like Gravity Forms', each new, with any other field replaced by anything.
entry_fields = st.sampled_from(["form_id", "1.3", "1.6", "2", "3", "4", "5.1", "ip", "user_agent", "status",
                                "date_created"])
fresh_ids = itertools.count(10_000)
fuzzed_entries = st.dictionaries(entry_fields, json_values, max_size=6).map(
    lambda changes: make_entry(next(fresh_ids), **changes))


@pytest.fixture
def client(settings: Settings, form_object: dict[str, Any]) -> Iterator[TestClient]:
    with session_scope() as session:
        register_form(session, site=settings.site, form_object=form_object)
    configured = twilio_settings(settings, voice_inbound="ring")
    with TestClient(create_app(configured, alert_services(configured)), raise_server_exceptions=False) as test_client:
        yield test_client


def stored() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Submission)) or 0)


@FUZZ
@given(body=json_values)
def test_any_json_on_the_webhook_is_never_a_5xx(client: TestClient, body: Any) -> None:
    before = stored()
    response = client.post("/hooks/gravityforms", content=json.dumps(body), headers=AUTH)

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert "error" in response.json() and stored() == before


@FUZZ
@given(entry=fuzzed_entries)
def test_any_field_of_an_entry_replaced_by_anything_is_a_4xx_or_a_stored_entry(
    client: TestClient, entry: dict[str, Any]
) -> None:
    before = stored()
    response = client.post("/hooks/gravityforms", content=json.dumps(entry), headers=AUTH)

    assert response.status_code in (202, 400, 413, 422), response.text
    if response.status_code == 202 or "submission" in response.json():
        # Accepted, or kept for later (an unknown form): either way it is stored, once.
        assert stored() == before + 1
    else:
        assert stored() == before, "a refused entry leaves nothing behind"


@FUZZ
@given(body=st.binary(max_size=2_000), path=st.sampled_from(["/hooks/gravityforms", "/hooks/gravityforms/main",
                                                               "/hooks/gravityforms/no-such-site"]))
def test_any_bytes_on_any_webhook_path_are_never_a_5xx(client: TestClient, body: bytes, path: str) -> None:
    response = client.post(path, content=body, headers=AUTH)

    assert response.status_code < 500, response.text


TWILIO_ROUTES = ["/hooks/twilio/sms", "/hooks/twilio/status/message", "/hooks/twilio/status/call",
                 "/hooks/twilio/voice/reminder?alert=1", "/hooks/twilio/voice/keypress?alert=1",
                 "/hooks/twilio/voice/dial-status?claim=1", "/hooks/twilio/voice/inbound",
                 "/hooks/twilio/voice/inbound/status", "/hooks/twilio/voice/inbound/whisper?call=1&staff=avery",
                 "/hooks/twilio/voice/inbound/whisper-key?call=1&staff=avery",
                 "/hooks/twilio/voice/inbound/ring-status?call=1&step=0", "/hooks/twilio/voice/inbound/recorded?call=1",
                 "/hooks/twilio/voice/inbound/recording?call=1", "/hooks/twilio/voice/inbound/transcription?call=1"]
# A real Twilio id now and then, so the call flow's steps are reached, not only refused early.
sids = st.sampled_from(["CA" + "0" * 32, "CA" + "f" * 32, "SM" + "0" * 32])
form_names = st.sampled_from(["From", "To", "Body", "MessageSid", "MessageStatus", "CallSid", "CallStatus",
                              "Digits", "ErrorCode", "DialCallStatus", "DialCallDuration", "AnsweredBy", "NumMedia",
                              "RecordingSid", "RecordingUrl", "RecordingDuration", "RecordingStatus",
                              "TranscriptionText", "TranscriptionStatus"]) | hostile_text
step_values = sids | st.sampled_from(["completed", "no-answer", "in-progress", "1", "12", "machine_start",
                                      "https://api.twilio.com/2010-04-01/Accounts/AC0/Recordings/RE0", "+16175550166"])
form_values = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"),
                      max_size=80)


@FUZZ
@given(route=st.sampled_from(TWILIO_ROUTES), params=st.dictionaries(form_names, form_values | step_values, max_size=6))
def test_any_correctly_signed_twilio_callback_is_never_a_5xx(
    client: TestClient, route: str, params: dict[str, str]
) -> None:
    response = signed_post(client, route, params)

    assert response.status_code < 500, response.text


@FUZZ
@given(route=st.sampled_from(TWILIO_ROUTES), params=st.dictionaries(form_names, form_values, max_size=4))
def test_an_unsigned_twilio_callback_is_refused(client: TestClient, route: str, params: dict[str, str]) -> None:
    response = client.post(route, data=params)

    assert response.status_code == 403


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/nope", "/hooks/gravityforms"])
def test_every_get_endpoint_answers_without_a_5xx(client: TestClient, path: str) -> None:
    assert client.get(path).status_code < 500


def test_the_status_page_without_credentials_configured_says_so_with_a_503(client: TestClient) -> None:
    assert client.get("/status?days=-1").status_code == 503

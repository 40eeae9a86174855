from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
import responses
from responses import matchers

from integrations.errors import IntegrationError, RateLimited, ServiceUnavailable, Unauthorized
from integrations.messaging import Messenger
from integrations.twilio.client import TwilioMessenger

ACCOUNT_SID = "AC0f1e2d3c4b5a69788796a5b4c3d2e1f0"
AUTH_TOKEN = "fake-auth-token-0000"
FROM = "+18555550100"
TO = "+15555550123"
BODY = "New admissions lead waiting: call back within 15 min (lead 4821)"
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
MESSAGE_SID = "SM00112233445566778899aabbccddeeff"


@pytest.fixture(autouse=True)
def no_twilio_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWILIO_EDGE", "TWILIO_REGION", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def messenger(**kwargs: Any) -> TwilioMessenger:
    return TwilioMessenger(ACCOUNT_SID, AUTH_TOKEN, FROM, **kwargs)


def created_message(status: str = "queued") -> dict[str, Any]:
    # https://www.twilio.com/docs/messaging/api/message-resource, trimmed
    return {
        "sid": MESSAGE_SID,
        "account_sid": ACCOUNT_SID,
        "to": TO,
        "from": FROM,
        "body": BODY,
        "status": status,
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "error_code": None,
    }


def twilio_error(code: int, status: int, message: str) -> dict[str, Any]:
    # https://www.twilio.com/docs/usage/twilios-response: Twilio's messages often quote the To number.
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    return {"code": code, "message": message, "more_info": more_info, "status": status}


def sent_form() -> dict[str, list[str]]:
    body = responses.calls[-1].request.body
    assert isinstance(body, str)
    return parse_qs(body)


def test_it_is_a_messenger() -> None:
    sender: Messenger = messenger()
    assert sender.name == "Twilio SMS"


@responses.activate
def test_it_posts_to_from_and_body_form_encoded_with_basic_auth() -> None:
    responses.post(MESSAGES_URL, json=created_message(), status=201)

    sent = messenger().send_sms(TO, BODY)

    assert sent.sid == MESSAGE_SID
    assert sent.status == "queued"
    request = responses.calls[0].request
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    expected_auth = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected_auth}"
    assert sent_form() == {"To": [TO], "From": [FROM], "Body": [BODY]}


@responses.activate
def test_it_asks_for_status_callbacks_when_configured() -> None:
    responses.post(MESSAGES_URL, json=created_message(), status=201)

    messenger(status_callback_url="https://admitflow.example.org/twilio/status").send_sms(TO, BODY)

    assert sent_form()["StatusCallback"] == ["https://admitflow.example.org/twilio/status"]


@pytest.mark.parametrize("region", [None, "ie1"])
@responses.activate
def test_it_sends_to_the_api_base_url_even_with_a_twilio_region_set(
    monkeypatch: pytest.MonkeyPatch, region: str | None
) -> None:
    if region:
        monkeypatch.setenv("TWILIO_REGION", region)
        monkeypatch.setenv("TWILIO_EDGE", "dublin")
    fake_url = f"http://127.0.0.1:8765/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    responses.post(fake_url, json=created_message(), status=201)

    sent = messenger(api_base_url="http://127.0.0.1:8765").send_sms(TO, BODY)

    assert sent.sid == MESSAGE_SID
    assert responses.calls[0].request.url == fake_url


@responses.activate
def test_bad_credentials_are_unauthorized_and_name_the_settings() -> None:
    responses.post(MESSAGES_URL, json=twilio_error(20003, 401, "Authenticate"), status=401)

    with pytest.raises(Unauthorized) as caught:
        messenger().send_sms(TO, BODY)

    assert caught.value.permanent
    assert "TWILIO_ACCOUNT_SID" in caught.value.message
    assert "TWILIO_AUTH_TOKEN" in caught.value.message
    assert AUTH_TOKEN not in caught.value.message


@pytest.mark.parametrize(
    ("code", "twilio_message", "advice"),
    [
        (21211, f"The 'To' number {TO} is not a valid phone number.", "ROSTER_FILE"),
        (21614, f"'To' number {TO} is not a valid mobile number", "ROSTER_FILE"),
        (21610, "Attempt to send to unsubscribed recipient", "text START"),
        (21408, f"Permission to send an SMS has not been enabled for the region of {TO}", "Permissions"),
        (21612, f"The 'To' phone number: {TO}, is not currently reachable", "ROSTER_FILE"),
        (21606, f"The 'From' number {FROM} is not a valid message-capable number", "TWILIO_FROM_NUMBER"),
        (21659, f"Mismatch between the 'From' number {FROM} and the account", "TWILIO_FROM_NUMBER"),
        (21266, f"'To' and 'From' number cannot be the same: {TO}", "TWILIO_FROM_NUMBER"),
    ],
)
@responses.activate
def test_recipient_and_sender_problems_are_permanent_and_say_what_to_fix(
    code: int, twilio_message: str, advice: str
) -> None:
    responses.post(MESSAGES_URL, json=twilio_error(code, 400, twilio_message), status=400)

    with pytest.raises(IntegrationError) as caught:
        messenger().send_sms(TO, BODY)

    assert caught.value.permanent
    assert caught.value.status == 400
    assert str(code) in caught.value.message
    assert advice in caught.value.message


@responses.activate
def test_a_recipient_problem_names_only_the_last_two_digits() -> None:
    error = twilio_error(21211, 400, f"The 'To' number {TO} is not a valid phone number.")
    responses.post(MESSAGES_URL, json=error, status=400)

    with pytest.raises(IntegrationError) as caught:
        messenger().send_sms(TO, BODY)

    assert "ending in 23" in caught.value.message


@pytest.mark.parametrize(("code", "status"), [(20429, 429), (20429, 400), (None, 429)])
@responses.activate
def test_rate_limits_are_retried(code: int | None, status: int) -> None:
    error = twilio_error(code, status, "Too Many Requests") if code else {"message": "Too Many Requests"}
    responses.post(MESSAGES_URL, json=error, status=status)

    with pytest.raises(RateLimited) as caught:
        messenger().send_sms(TO, BODY)

    assert not caught.value.permanent


@pytest.mark.parametrize("status", [500, 503])
@responses.activate
def test_server_errors_are_unavailable_not_permanent(status: int) -> None:
    responses.post(MESSAGES_URL, json=twilio_error(20500, status, "Internal Server Error"), status=status)

    with pytest.raises(ServiceUnavailable) as caught:
        messenger().send_sms(TO, BODY)

    assert not caught.value.permanent
    assert caught.value.status == status


@responses.activate
def test_other_client_errors_are_permanent_and_name_the_code() -> None:
    responses.post(MESSAGES_URL, json=twilio_error(21617, 400, f"Body too long: {BODY}"), status=400)

    with pytest.raises(IntegrationError) as caught:
        messenger().send_sms(TO, BODY)

    assert type(caught.value) is IntegrationError
    assert caught.value.permanent
    assert "21617" in caught.value.message


@pytest.mark.parametrize(
    "failure", [requests.ReadTimeout(), requests.ConnectTimeout(), requests.ConnectionError()]
)
@responses.activate
def test_timeouts_and_connection_failures_are_unavailable(failure: Exception) -> None:
    responses.post(MESSAGES_URL, body=failure)

    with pytest.raises(ServiceUnavailable) as caught:
        messenger(timeout=2.5).send_sms(TO, BODY)

    assert not caught.value.permanent


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, twilio_error(21211, 400, f"The 'To' number {TO} is not a valid phone number. Body: {BODY}")),
        (400, twilio_error(21617, 400, f"Body {BODY} to {TO} is too long")),
        (401, twilio_error(20003, 401, f"Authenticate {TO} {BODY}")),
        (429, twilio_error(20429, 429, f"Too many requests to {TO}")),
        (500, twilio_error(20500, 500, f"Internal error sending {BODY} to {TO}")),
    ],
)
@responses.activate
def test_no_error_carries_the_body_or_the_full_number_or_the_original_exception(
    status: int, error: dict[str, Any]
) -> None:
    responses.post(MESSAGES_URL, json=error, status=status)

    with pytest.raises(IntegrationError) as caught:
        messenger().send_sms(TO, BODY)

    for text in (str(caught.value), repr(caught.value), caught.value.message):
        assert BODY not in text
        assert TO not in text
        assert TO.lstrip("+") not in text
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def message_page(*bodies: str) -> dict[str, Any]:
    """GET Messages.json, trimmed: https://www.twilio.com/docs/messaging/api/message-resource#read-multiple-message-resources"""
    messages = [created_message("delivered") | {"sid": f"SM{n:032d}", "body": body} for n, body in enumerate(bodies)]
    return {"messages": messages, "page": 0, "page_size": 20, "next_page_uri": None, "previous_page_uri": None,
            "first_page_uri": "/2010-04-01/Accounts/x/Messages.json?PageSize=20", "uri": "/x"}


@responses.activate
def test_a_text_whose_answer_was_lost_is_found_among_the_latest_to_that_staff_phone() -> None:
    asked = matchers.query_param_matcher({"To": TO, "From": FROM, "PageSize": "1000"})
    responses.get(MESSAGES_URL, match=[asked], json=message_page(
        "Another lead waiting (lead 4820)", f"Sent from your Twilio trial account - {BODY}"))

    found = messenger().find_sms(TO, BODY)

    assert found is not None and found.sid == f"SM{1:032d}" and found.status == "delivered"


@responses.activate
def test_no_text_is_found_when_none_of_the_latest_has_the_body() -> None:
    responses.get(MESSAGES_URL, json=message_page("Another lead waiting (lead 4820)"))

    assert messenger().find_sms(TO, BODY) is None


@responses.activate
def test_a_failed_lookup_is_retried_later() -> None:
    responses.get(MESSAGES_URL, json=twilio_error(20500, 503, "Service Unavailable"), status=503)

    with pytest.raises(ServiceUnavailable):
        messenger().find_sms(TO, BODY)


@responses.activate
def test_a_lookup_refused_for_the_rate_is_a_rate_limit_and_a_failed_one_keeps_its_status() -> None:
    responses.get(MESSAGES_URL, json=twilio_error(20429, 429, "Too Many Requests"), status=429)
    responses.get(MESSAGES_URL, body="<html>Bad Gateway</html>", status=502)

    with pytest.raises(RateLimited):
        messenger().find_sms(TO, BODY)
    with pytest.raises(ServiceUnavailable) as failed:
        messenger().find_sms(TO, BODY)
    assert failed.value.status == 502

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs

import pytest
import responses
from twilio.request_validator import RequestValidator

from integrations.errors import IntegrationError, RateLimited, ServiceUnavailable
from integrations.messaging import LogOnlyMessenger, Messenger
from integrations.twilio import twiml
from integrations.twilio.client import TwilioMessenger
from integrations.twilio.webhooks import TwilioSignatures, public_url

ACCOUNT_SID = "AC0f1e2d3c4b5a69788796a5b4c3d2e1f0"
AUTH_TOKEN = "fake-auth-token-0000"
FROM = "+18555550100"
STAFF = "+16175550101"
PERSON = "+16175550142"
CALLS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
CALL_SID = "CA00112233445566778899aabbccddeeff"
TWIML_URL = "https://admitflow.example.org/hooks/twilio/voice/reminder?alert=7"
CALL_STATUS_URL = "https://admitflow.example.org/hooks/twilio/status/call"


@pytest.fixture(autouse=True)
def no_twilio_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWILIO_EDGE", "TWILIO_REGION", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def messenger(**kwargs: Any) -> TwilioMessenger:
    return TwilioMessenger(ACCOUNT_SID, AUTH_TOKEN, FROM, **kwargs)


def created_call(status: str = "queued") -> dict[str, Any]:
    # https://www.twilio.com/docs/voice/api/call-resource, trimmed
    return {"sid": CALL_SID, "account_sid": ACCOUNT_SID, "to": STAFF, "from": FROM, "status": status,
            "direction": "outbound-api", "api_version": "2010-04-01"}


def sent_form() -> dict[str, list[str]]:
    body = responses.calls[-1].request.body
    assert isinstance(body, str)
    return parse_qs(body)


def test_both_messengers_can_text_and_call() -> None:
    for sender in (messenger(), LogOnlyMessenger()):
        typed: Messenger = sender
        assert callable(typed.send_sms) and callable(typed.place_call)


@responses.activate
def test_a_reminder_call_posts_to_from_the_twiml_url_a_ring_timeout_the_status_callback_and_machine_detection(
) -> None:
    responses.post(CALLS_URL, json=created_call(), status=201)

    placed = messenger(call_status_callback_url=CALL_STATUS_URL).place_call(STAFF, TWIML_URL)

    assert (placed.sid, placed.status) == (CALL_SID, "queued")
    assert sent_form() == {
        "To": [STAFF], "From": [FROM], "Url": [TWIML_URL], "Method": ["POST"], "Timeout": ["25"],
        "StatusCallback": [CALL_STATUS_URL], "MachineDetection": ["Enable"],
    }


@pytest.mark.parametrize(
    ("code", "advice"),
    [(21217, "ROSTER_FILE"), (21215, "Voice Geographic Permissions"), (21210, "TWILIO_FROM_NUMBER"),
     (21205, "ADMITFLOW_PUBLIC_URL")],
)
@responses.activate
def test_call_problems_are_permanent_and_say_what_to_fix_without_the_number(code: int, advice: str) -> None:
    message = f"Problem calling {STAFF} from {FROM}"
    responses.post(CALLS_URL, json={"code": code, "message": message, "status": 400}, status=400)

    with pytest.raises(IntegrationError) as caught:
        messenger().place_call(STAFF, TWIML_URL)

    assert caught.value.permanent and str(code) in caught.value.message and advice in caught.value.message
    assert STAFF not in caught.value.message and caught.value.__cause__ is None


@pytest.mark.parametrize(("status", "error"), [(429, RateLimited), (503, ServiceUnavailable)])
@responses.activate
def test_a_busy_twilio_is_retried(status: int, error: type[IntegrationError]) -> None:
    responses.post(CALLS_URL, json={"code": 20429 if status == 429 else 20500, "status": status}, status=status)

    with pytest.raises(error) as caught:
        messenger().place_call(STAFF, TWIML_URL)

    assert not caught.value.permanent


def parse(document: str) -> ET.Element:
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(document)  # noqa: S314 (TwiML we generated, not untrusted input)


def test_an_sms_answer_is_one_message_and_no_answer_is_an_empty_response() -> None:
    root = parse(twiml.message_reply("Claimed R-7K2QX for you."))
    assert root.tag == "Response"
    assert [(child.tag, child.text) for child in root] == [("Message", "Claimed R-7K2QX for you.")]
    assert list(parse(twiml.message_reply(None))) == []


def test_the_reminder_prompt_gathers_one_digit_posted_to_the_keypress_url() -> None:
    prompt = "There is an unclaimed confidential callback request, reference R seven K two Q X."
    root = parse(twiml.claim_prompt(prompt, "https://admitflow.example.org/hooks/twilio/voice/keypress?alert=7"))

    gather = root.find("Gather")
    assert gather is not None
    assert gather.attrib == {"numDigits": "1", "method": "POST", "timeout": "8",
                             "action": "https://admitflow.example.org/hooks/twilio/voice/keypress?alert=7"}
    assert [say.text for say in gather.findall("Say")] == [prompt, prompt]
    assert [child.tag for child in root] == ["Gather", "Say", "Hangup"]


def test_the_bridge_dials_the_person_with_the_center_number_as_caller_id() -> None:
    root = parse(twiml.bridge("Connecting you now.", PERSON, FROM, "https://admitflow.example.org/d?claim=3"))

    assert root.findtext("Say") == "Connecting you now."
    dial = root.find("Dial")
    assert dial is not None
    assert dial.attrib == {"callerId": FROM, "action": "https://admitflow.example.org/d?claim=3", "method": "POST",
                           "timeout": "30"}
    assert [(number.tag, number.text) for number in dial] == [("Number", PERSON)]


def test_spoken_text_is_escaped_not_interpreted_as_twiml() -> None:
    root = parse(twiml.spoken("Claimed by <Dial>Avery & co</Dial>."))
    assert [(child.tag, child.text) for child in root] == [
        ("Say", "Claimed by <Dial>Avery & co</Dial>."), ("Hangup", None),
    ]


URL = "https://admitflow.example.org/hooks/twilio/sms"
PARAMS = {"MessageSid": "SM" + "1" * 32, "From": STAFF, "To": FROM, "Body": "CLAIM R-7K2QX"}


def twilio_signature(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


def test_a_request_signed_by_twilio_for_this_url_is_valid() -> None:
    assert TwilioSignatures(AUTH_TOKEN).is_valid(URL, PARAMS, twilio_signature(URL, PARAMS))


def test_a_tampered_body_is_invalid() -> None:
    signature = twilio_signature(URL, PARAMS)
    assert not TwilioSignatures(AUTH_TOKEN).is_valid(URL, {**PARAMS, "Body": "CLAIM R-0000X"}, signature)
    assert not TwilioSignatures(AUTH_TOKEN).is_valid(URL, {**PARAMS, "Extra": "1"}, signature)


def test_a_signature_for_another_url_or_token_is_invalid() -> None:
    signatures = TwilioSignatures(AUTH_TOKEN)
    assert not signatures.is_valid(URL, PARAMS, twilio_signature("https://elsewhere.example.org/hooks/twilio/sms",
                                                                 PARAMS))
    assert not signatures.is_valid(URL + "?alert=1", PARAMS, twilio_signature(URL, PARAMS))
    assert not signatures.is_valid(URL, PARAMS, twilio_signature(URL, PARAMS, token="another-token"))


def test_a_missing_signature_is_invalid() -> None:
    assert not TwilioSignatures(AUTH_TOKEN).is_valid(URL, PARAMS, None)
    assert not TwilioSignatures(AUTH_TOKEN).is_valid(URL, PARAMS, "")


def test_a_shared_key_signature_is_refused_because_admitflow_checks_the_auth_token() -> None:
    signature = twilio_signature(URL, PARAMS)
    assert not TwilioSignatures(AUTH_TOKEN).is_valid(URL, PARAMS, signature, "key=webhooks_k1,algorithm=HMAC_SHA256")


def test_the_public_url_keeps_a_proxy_prefix_and_the_query_as_sent() -> None:
    assert public_url("https://example.org/admitflow/", "/hooks/twilio/voice/reminder", "alert=7") == (
        "https://example.org/admitflow/hooks/twilio/voice/reminder?alert=7"
    )
    assert public_url("https://example.org", "/hooks/twilio/sms") == "https://example.org/hooks/twilio/sms"

"""`admitflow doctor` against the vendors' documented answers (`responses`), each failure named with its fix.

Answers are trimmed from: Gravity Forms GET /wp-json/gf/v2/forms/{id} (examples/gravityforms/form.json); HubSpot
POST /oauth/v2/private-apps/get/access-token-info ({userId, hubId, appId, scopes}) and GET /crm/v3/owners
({results, paging.next.after}); Salesforce POST /services/oauth2/token and GET .../sobjects/Lead/describe
({fields: [{name, externalId, unique, createable, updateable}]}); Twilio GET /Accounts/{Sid}.json ({status, type})
and GET /Accounts/{Sid}/IncomingPhoneNumbers.json?PhoneNumber= ({incoming_phone_numbers: [{capabilities, sms_url,
sms_method, voice_url, voice_method, status_callback, status_callback_method, voice_application_sid, trunk_sid}]}).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from click.testing import CliRunner
from responses import matchers

from config.settings import Settings, get_settings
from tests.conftest import EXAMPLES
from worker.cli import main
from worker.ops.doctor import doctor
from worker.ops.readiness import Check
from worker.staff.services import default_services
from worker.store.db import utcnow

SITE = "https://clinic.example.org"
HUBSPOT = "https://api.hubapi.com"
LOGIN = "https://center-example.my.salesforce.com"
SID = "AC0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TWILIO = f"https://api.twilio.com/2010-04-01/Accounts/{SID}"
CENTER = "+18555550100"
PUBLIC = "https://admitflow.example.org"
ROSTER_OWNERS = ["1001", "1002", "1003", "1004"]  # config/roster.example.toml
OWN_PHONE_SETUP = "https://phones.example.org/twilio/voice"  # what answers the center's calls with VOICE_INBOUND=off
INBOUND_CALL = f"{PUBLIC}/hooks/twilio/voice/inbound"
INBOUND_STATUS = f"{PUBLIC}/hooks/twilio/voice/inbound/status"


def configure(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    default_services.cache_clear()
    return get_settings()


@pytest.fixture
def everything(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return configure(
        monkeypatch, GRAVITYFORMS_BASE_URL=SITE, GRAVITYFORMS_CONSUMER_KEY="ck_test",
        GRAVITYFORMS_CONSUMER_SECRET="cs_x", GRAVITYFORMS_FORM_IDS="1", HUBSPOT_TOKEN="pat-na1-doctor-token",
        TWILIO_ACCOUNT_SID=SID, TWILIO_AUTH_TOKEN="twilio-token", TWILIO_FROM_NUMBER=CENTER,
        ADMITFLOW_PUBLIC_URL=PUBLIC,
    )


def owner(owner_id: str) -> dict[str, Any]:
    return {"id": owner_id, "email": f"staff{owner_id}@example.org", "type": "PERSON", "firstName": "Staff",
            "lastName": "Example", "userId": int(owner_id), "archived": False}


def number(**overrides: Any) -> dict[str, Any]:
    found = {"sid": "PN" + "0" * 32, "account_sid": SID, "phone_number": CENTER, "friendly_name": "(855) 555-0100",
             "capabilities": {"fax": False, "mms": True, "sms": True, "voice": True},
             "sms_url": f"{PUBLIC}/hooks/twilio/sms", "sms_method": "POST", "sms_application_sid": "",
             "status_callback": "", "status_callback_method": "POST", "voice_url": OWN_PHONE_SETUP,
             "voice_method": "POST", "voice_fallback_url": "", "voice_fallback_method": "POST",
             "voice_application_sid": "", "trunk_sid": None}
    return found | overrides


def numbers_page(*found: dict[str, Any]) -> dict[str, Any]:
    return {"incoming_phone_numbers": list(found), "end": len(found) - 1, "first_page_uri": "/first", "next_page_uri":
            None, "page": 0, "page_size": 1, "previous_page_uri": None, "start": 0, "uri": "/IncomingPhoneNumbers.json"}


@pytest.fixture
def vendors() -> Iterator[responses.RequestsMock]:
    """Every vendor answering as documented for a correct setup; a test replaces one answer to break it."""
    form = json.loads((EXAMPLES / "form.json").read_text())
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{SITE}/wp-json/gf/v2/forms/1", json=form)
        mock.post(f"{HUBSPOT}/oauth/v2/private-apps/get/access-token-info",
                  match=[matchers.json_params_matcher({"tokenKey": "pat-na1-doctor-token"})],
                  json={"userId": 7, "hubId": 4242, "appId": 99,
                        "scopes": ["crm.objects.contacts.read", "crm.objects.contacts.write",
                                   "crm.objects.owners.read"]})
        mock.get(f"{HUBSPOT}/crm/v3/owners", match=[matchers.query_param_matcher({"limit": "100"})],
                 json={"results": [owner(i) for i in ROSTER_OWNERS[:2]], "paging": {"next": {"after": "2"}}})
        mock.get(f"{HUBSPOT}/crm/v3/owners", match=[matchers.query_param_matcher({"limit": "100", "after": "2"})],
                 json={"results": [owner(i) for i in ROSTER_OWNERS[2:]]})
        mock.get(f"{TWILIO}.json", json={"sid": SID, "friendly_name": "Center", "status": "active", "type": "Full"})
        mock.get(f"{TWILIO}/IncomingPhoneNumbers.json", json=numbers_page(number()))
        yield mock


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_doctor_passes_a_center_configured_as_documented(everything: Settings, vendors: responses.RequestsMock) -> None:
    result = CliRunner().invoke(main, ["doctor"])

    assert result.exit_code == 0, result.output
    assert "0 failed" in result.stdout
    checks = by_name(doctor(everything, utcnow()))
    assert "form 1 'Request a confidential call'" in checks["gravity forms main"].detail
    assert "account 4242" in checks["hubspot"].detail and "4 owners" in checks["hubspot"].detail
    assert checks["twilio"].detail == (f"account active; {CENTER} has SMS and voice; its messages come to {PUBLIC}"
                                       "/hooks/twilio/sms, its calls go to its own voice webhook (VOICE_INBOUND=off)")
    assert "encryption keys" in checks["keys"].detail and "mH5GJ0QK3N0" not in result.stdout
    twilio_number_query = next(call.request.url for call in vendors.calls if "IncomingPhoneNumbers" in call.request.url)
    assert "PhoneNumber=%2B18555550100" in twilio_number_query


def failing(settings: Settings) -> dict[str, Check]:
    return {check.name: check for check in doctor(settings, utcnow()) if not check.ok}


def test_a_refused_gravity_forms_key_is_named_with_the_fix(
    everything: Settings, vendors: responses.RequestsMock
) -> None:
    vendors.replace(responses.GET, f"{SITE}/wp-json/gf/v2/forms/1", status=401,
                    json={"code": "rest_forbidden", "message": "Sorry, you are not allowed to do that.",
                          "data": {"status": 401}})

    (name, check), = failing(everything).items()

    assert name == "gravity forms main"
    assert "refused the credentials (401)" in check.detail and "REST API v2 key with read access" in check.detail


def test_a_form_id_the_site_does_not_have_is_named(everything: Settings, vendors: responses.RequestsMock) -> None:
    vendors.replace(responses.GET, f"{SITE}/wp-json/gf/v2/forms/1", status=404,
                    json={"code": "not_found", "message": "Form not found.", "data": {"status": 404}})

    check = failing(everything)["gravity forms main"]

    assert check.detail == f"{SITE} has no form 1" and "GRAVITYFORMS_FORM_IDS" in check.fix


def test_a_refused_hubspot_token_is_named(everything: Settings, vendors: responses.RequestsMock) -> None:
    vendors.replace(responses.POST, f"{HUBSPOT}/oauth/v2/private-apps/get/access-token-info", status=401,
                    json={"status": "error", "message": "Authentication credentials not found.",
                          "category": "INVALID_AUTHENTICATION"})

    check = failing(everything)["hubspot"]

    assert "HubSpot refused the credentials (401)" in check.detail and "set HUBSPOT_TOKEN" in check.detail


def test_a_hubspot_token_without_the_contact_scopes_is_named(
    everything: Settings, vendors: responses.RequestsMock
) -> None:
    vendors.replace(responses.POST, f"{HUBSPOT}/oauth/v2/private-apps/get/access-token-info",
                    json={"userId": 7, "hubId": 4242, "appId": 99, "scopes": ["crm.objects.contacts.read"]})

    check = failing(everything)["hubspot"]

    assert check.detail == "the token lacks the scopes crm.objects.contacts.write"


def test_roster_owner_ids_hubspot_does_not_know_are_named(
    everything: Settings, vendors: responses.RequestsMock
) -> None:
    vendors.replace(responses.GET, f"{HUBSPOT}/crm/v3/owners", match=[matchers.query_param_matcher({"limit": "100"})],
                    json={"results": [owner("1001")]})

    check = failing(everything)["hubspot"]

    assert check.detail.startswith("roster staff blake, casey, dana have a hubspot_owner_id")
    assert "ROSTER_FILE" in check.fix


def test_an_855_number_whose_messages_go_elsewhere_is_named_with_the_url_to_set(
    everything: Settings, vendors: responses.RequestsMock
) -> None:
    vendors.replace(responses.GET, f"{TWILIO}/IncomingPhoneNumbers.json",
                    json=numbers_page(number(sms_url="https://old-host.example.org/sms")))

    check = failing(everything)["twilio"]

    assert check.detail == (f"{CENTER}'s incoming-message webhook is POST https://old-host.example.org/sms, not POST "
                            f"{PUBLIC}/hooks/twilio/sms")
    assert f"Webhook, {PUBLIC}/hooks/twilio/sms, HTTP POST" in check.fix


def test_a_webhook_password_is_not_shown(everything: Settings, vendors: responses.RequestsMock) -> None:
    vendors.replace(responses.GET, f"{TWILIO}/IncomingPhoneNumbers.json",
                    json=numbers_page(number(sms_url="https://center:s3cret-pass@old-host.example.org/sms")))

    check = failing(everything)["twilio"]

    assert "s3cret-pass" not in check.line()
    assert "is POST https://center:***@old-host.example.org/sms, not POST" in check.detail


@pytest.fixture
def phone_line(everything: Settings, monkeypatch: pytest.MonkeyPatch, vendors: responses.RequestsMock) -> Settings:
    """VOICE_INBOUND=ring, and the number's voice webhooks set as docs/configuration.md says."""
    answer_with(vendors)
    return configure(monkeypatch, VOICE_INBOUND="ring")


def answer_with(vendors: responses.RequestsMock, **overrides: Any) -> None:
    """The number as the phone line wants it, but for `overrides`."""
    vendors.replace(responses.GET, f"{TWILIO}/IncomingPhoneNumbers.json", json=numbers_page(number(
        **{"voice_url": INBOUND_CALL, "status_callback": INBOUND_STATUS} | overrides)))


def test_the_phone_line_passes_when_the_numbers_calls_come_to_admitflow(phone_line: Settings) -> None:
    check = by_name(doctor(phone_line, utcnow()))["twilio"]

    assert check.ok
    assert check.detail.endswith(f"its calls to {INBOUND_CALL} (VOICE_INBOUND=ring)")


def test_a_phone_line_whose_calls_go_elsewhere_is_named_with_the_url_to_set(
    phone_line: Settings, vendors: responses.RequestsMock
) -> None:
    answer_with(vendors, voice_url=OWN_PHONE_SETUP)

    check = failing(phone_line)["twilio"]

    assert check.detail == f"{CENTER}'s incoming-call webhook is POST {OWN_PHONE_SETUP}, not POST {INBOUND_CALL}"
    assert check.fix == (f"in the Twilio console, set the number's 'A call comes in' to Webhook, {INBOUND_CALL}, "
                         "HTTP POST")


def test_a_phone_line_called_with_get_is_named(phone_line: Settings, vendors: responses.RequestsMock) -> None:
    answer_with(vendors, voice_method="GET")

    check = failing(phone_line)["twilio"]

    assert check.detail == f"{CENTER}'s incoming-call webhook is GET {INBOUND_CALL}, not POST {INBOUND_CALL}"


def test_a_phone_line_without_the_call_status_callback_is_named(
    phone_line: Settings, vendors: responses.RequestsMock
) -> None:
    answer_with(vendors, status_callback="")

    check = failing(phone_line)["twilio"]

    assert check.detail == f"{CENTER}'s status callback is POST (none), not POST {INBOUND_STATUS}"
    assert check.fix == f"in the Twilio console, set the number's 'Call status changes' to {INBOUND_STATUS}, HTTP POST"


def test_a_phone_line_whose_calls_a_sip_trunk_takes_is_named(
    phone_line: Settings, vendors: responses.RequestsMock
) -> None:
    answer_with(vendors, trunk_sid="TK" + "1" * 32)

    check = failing(phone_line)["twilio"]

    assert check.detail == f"calls to {CENTER} go to the SIP trunk TK{'1' * 32}, not to its incoming-call webhook"
    assert f"'A call comes in' to Webhook, {INBOUND_CALL}, HTTP POST" in check.fix


def test_calls_sent_to_admitflow_while_voice_inbound_is_off_are_named(
    everything: Settings, vendors: responses.RequestsMock
) -> None:
    answer_with(vendors, status_callback="")

    check = failing(everything)["twilio"]

    assert check.detail == (f"{CENTER}'s incoming-call webhook is {INBOUND_CALL}, on admitflow, but VOICE_INBOUND is "
                            "off: admitflow is not set to answer calls")
    assert check.fix.startswith("set VOICE_INBOUND=ring or voicemail and set the number's 'A call comes in'")


def test_a_number_nothing_answers_calls_to_is_named(everything: Settings, vendors: responses.RequestsMock) -> None:
    vendors.replace(responses.GET, f"{TWILIO}/IncomingPhoneNumbers.json", json=numbers_page(number(voice_url="")))

    check = failing(everything)["twilio"]

    assert check.detail == f"{CENTER} has no incoming-call webhook, so nothing answers a call to it"
    assert f"set VOICE_INBOUND=ring or voicemail and set the number's 'A call comes in' to Webhook, {INBOUND_CALL}" \
        in check.fix


def test_with_voice_inbound_off_the_phone_lines_webhooks_are_not_asked_for(
    everything: Settings, vendors: responses.RequestsMock
) -> None:
    vendors.replace(responses.GET, f"{TWILIO}/IncomingPhoneNumbers.json", json=numbers_page(
        number(voice_url="", voice_method="GET", voice_application_sid="AP" + "2" * 32)))

    check = by_name(doctor(everything, utcnow()))["twilio"]

    assert check.ok and check.detail.endswith(f"its calls go to the TwiML app AP{'2' * 32} (VOICE_INBOUND=off)")


def test_an_855_number_without_sms_or_not_on_the_account_is_named(
    everything: Settings, vendors: responses.RequestsMock
) -> None:
    vendors.replace(responses.GET, f"{TWILIO}/IncomingPhoneNumbers.json", json=numbers_page(
        number(capabilities={"fax": False, "mms": False, "sms": False, "voice": True})))
    assert failing(everything)["twilio"].detail == f"{CENTER} cannot do SMS"

    vendors.replace(responses.GET, f"{TWILIO}/IncomingPhoneNumbers.json", json=numbers_page())
    assert failing(everything)["twilio"].detail == f"TWILIO_FROM_NUMBER {CENTER} is not a number on this Twilio account"


def test_refused_twilio_credentials_are_named(everything: Settings, vendors: responses.RequestsMock) -> None:
    vendors.replace(responses.GET, f"{TWILIO}.json", status=401,
                    json={"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003",
                          "status": 401})

    check = failing(everything)["twilio"]

    assert "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in check.detail


def test_salesforce_login_and_the_lead_external_id_field_are_checked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = configure(monkeypatch, CRM_BACKEND="salesforce", SALESFORCE_LOGIN_URL=LOGIN,
                           SALESFORCE_CLIENT_ID="3MVG9-connected-app", SALESFORCE_CLIENT_SECRET="sf-secret")
    describe = f"{LOGIN}/services/data/v60.0/sobjects/Lead/describe"
    field = {"name": "Admitflow_Ref__c", "type": "string", "length": 16, "externalId": True, "unique": True,
             "createable": True, "updateable": True}
    with responses.RequestsMock() as mock:
        mock.post(f"{LOGIN}/services/oauth2/token", json={
            "access_token": "00Dtest!doctor", "instance_url": LOGIN, "id": f"{LOGIN}/id/00D/005",
            "token_type": "Bearer", "issued_at": "1700000000000", "signature": "c2lnbmF0dXJl"})
        mock.get(describe, json={"name": "Lead", "fields": [{"name": "Id", "type": "id"}, field]})
        assert by_name(doctor(configured, utcnow()))["salesforce"].ok

        mock.replace(responses.GET, describe, json={"name": "Lead", "fields": [{"name": "Id", "type": "id"}]})
        check = failing(configured)["salesforce"]
        assert check.detail == f"logged in to {LOGIN}, but Lead has no field Admitflow_Ref__c"
        assert "Text(16), Unique, External ID" in check.fix

        mock.replace(responses.POST, f"{LOGIN}/services/oauth2/token", status=400,
                     json={"error": "invalid_client", "error_description": "invalid client credentials"})
        assert "Salesforce refused the client credentials login (400, invalid_client)" in failing(configured)[
            "salesforce"].detail


def test_doctor_exits_non_zero_and_lists_each_failure_with_its_fix(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, GRAVITYFORMS_WEBHOOK_SECRET="", DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none")

    result = CliRunner().invoke(main, ["doctor"])

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    database = next(line for line in lines if " database " in line)
    assert database.startswith("FAIL") and "Connection refused" in database
    secret = lines.index(next(line for line in lines if " webhook_secret " in line))
    assert lines[secret + 1].strip().startswith("fix: set GRAVITYFORMS_WEBHOOK_SECRET")
    assert lines[-1].endswith("not configured") and " 2 failed" in lines[-1]

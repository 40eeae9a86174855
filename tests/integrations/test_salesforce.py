from __future__ import annotations

import base64
import json
import re
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
import requests
import responses
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from responses import matchers

from integrations.crm import CallbackTaskSpec, ContactCard
from integrations.errors import (
    Conflict,
    IntegrationError,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from integrations.salesforce import ClientCredentialsFlow, JwtBearerFlow, SalesforceCRM
from integrations.salesforce.auth import AccessToken

LOGIN = "https://admitflow-test.my.salesforce.com"
TOKEN_URL = f"{LOGIN}/services/oauth2/token"
INSTANCE = "https://admitflow-test-instance.my.salesforce.com"
DATA = f"{INSTANCE}/services/data/v60.0"
LEAD_BY_REF = f"{DATA}/sobjects/Lead/Admitflow_Ref__c/L-7Q2"
TASKS = f"{DATA}/sobjects/Task"
# Notes and callbacks are Tasks upserted by our key in the Task external ID field.
NOTE_TASK = re.compile(re.escape(f"{TASKS}/Admitflow_Key__c/admitflow-note-") + "[0-9a-f]{32}")
CALLBACK_TASK = f"{TASKS}/Admitflow_Key__c/admitflow-callback-L-7Q2"
CLIENT_ID, CLIENT_SECRET = "3MVG9-test-consumer-key", "test-consumer-secret-0000"
TOKEN, FRESH_TOKEN = "00Dtest!first-access-token", "00Dtest!fresh-access-token"
LEAD_ID, TASK_ID = "00Q5e00000Zeb001AAA", "00T5e00000Zeb001AAA"

# Fictional person; every value is distinctive so a leak into an error message is easy to spot.
FIRST, LAST, EMAIL, PHONE = "Zebulon", "Quixotl-Canary", "zeb.canary@example.org", "+16175550142"
MESSAGE = "I can't sleep & I drink <a lot>\nplease call after 5"
PHI = [FIRST, LAST, EMAIL, PHONE, "can't sleep", "drink"]


def card(**overrides: Any) -> ContactCard:
    values: dict[str, Any] = {
        "lead_ref": "L-7Q2",
        "first_name": FIRST,
        "last_name": LAST,
        "email": EMAIL,
        "phone": PHONE,
        "repeat_count": 2,
        "source": "main/form 3",
        "consent_to_text": True,
    }
    return ContactCard(**(values | overrides))


def callback(owner_id: str | None = "0055e000001OwnrAAA",
             due_at: datetime = datetime(2025, 3, 4, 15, 30, tzinfo=UTC)) -> CallbackTaskSpec:
    return CallbackTaskSpec(
        lead_ref="L-7Q2",
        subject="Callback L-7Q2",
        body=f"{FIRST} asked for a call: {MESSAGE}",
        owner_id=owner_id,
        due_at=due_at,
    )


def bearer(token: str = TOKEN) -> Any:
    return matchers.header_matcher({"Authorization": f"Bearer {token}"})


def token_answer(token: str = TOKEN) -> dict[str, str]:
    return {
        "access_token": token,
        "instance_url": INSTANCE,
        "id": f"{LOGIN}/id/00D5e000000TestEAA/0055e000001IntgAAA",
        "token_type": "Bearer",
        "issued_at": "1741102200000",
        "signature": "c2lnbmF0dXJl",
        "scope": "api",
    }


def sf_error(code: str, message: str, fields: list[str] | None = None, **extra: Any) -> list[dict[str, Any]]:
    return [{"message": message, "errorCode": code, "fields": fields or [], **extra}]


def duplicate_error(*matches: tuple[str, str], rule: str = "Standard_Lead_Duplicate_Rule") -> list[dict[str, Any]]:
    """DUPLICATES_DETECTED as Salesforce sends it, one matchResult per (entity type, record id)."""
    match_results = [
        {
            "entityType": entity,
            "errors": [],
            "matchEngine": "FuzzyMatchEngine",
            "matchRecords": [
                {
                    "additionalInformation": [],
                    "fieldDiffs": [],
                    "matchConfidence": 100.0,
                    "record": {
                        "attributes": {"type": entity, "url": f"/services/data/v60.0/sobjects/{entity}/{record_id}"},
                        "Id": record_id,
                    },
                }
            ],
            "rule": f"Standard_{entity}_Match_Rule_v1_1",
            "size": 1,
            "success": True,
        }
        for entity, record_id in matches
    ]
    duplicate = {
        "allowSave": False,
        "duplicateRule": rule,
        "duplicateRuleEntityType": "Lead",
        "errorMessage": f"Use one of these records? {EMAIL}",
        "matchResults": match_results,
    }
    return sf_error("DUPLICATES_DETECTED", f"Use one of these records? {FIRST} {LAST}", duplicateResult=duplicate)


def sent_json(call: Any) -> Any:
    return json.loads(call.request.body or "{}")


def assert_phi_free(error: IntegrationError) -> None:
    shown = "".join(traceback.format_exception(error))
    for value in [*PHI, TOKEN, FRESH_TOKEN, CLIENT_SECRET]:
        assert value not in shown


@pytest.fixture
def salesforce() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def logged_in(salesforce: responses.RequestsMock) -> responses.RequestsMock:
    """Salesforce with one successful client credentials login registered."""
    salesforce.post(TOKEN_URL, json=token_answer())
    return salesforce


@pytest.fixture
def crm() -> SalesforceCRM:
    return SalesforceCRM(ClientCredentialsFlow(LOGIN, CLIENT_ID, CLIENT_SECRET))


def rsa_pem() -> tuple[bytes, rsa.RSAPublicKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, key.public_key()


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# Logging in


def test_it_logs_in_with_client_credentials_and_sends_the_token_as_a_bearer(
    salesforce: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    salesforce.post(TOKEN_URL, json=token_answer(), match=[matchers.urlencoded_params_matcher(form)])
    salesforce.patch(NOTE_TASK, status=201, json={"id": TASK_ID, "success": True, "errors": []}, match=[bearer()])

    crm.add_note(LEAD_ID, MESSAGE, datetime(2025, 3, 4, tzinfo=UTC))

    assert NOTE_TASK.fullmatch(salesforce.calls[1].request.url)  # on the instance URL the login answered with


def test_it_logs_in_with_an_rs256_jwt_assertion_signed_by_the_private_key(salesforce: responses.RequestsMock) -> None:
    pem, public_key = rsa_pem()
    login = "https://login.salesforce.com"
    salesforce.post(f"{login}/services/oauth2/token", json=token_answer())
    salesforce.patch(NOTE_TASK, status=201, json={"id": TASK_ID, "success": True, "errors": []}, match=[bearer()])
    crm = SalesforceCRM(JwtBearerFlow(login, CLIENT_ID, "intake@admitflow.example", pem))

    before = int(time.time())
    crm.add_note(LEAD_ID, MESSAGE, datetime(2025, 3, 4, tzinfo=UTC))

    body = salesforce.calls[0].request.body
    assert isinstance(body, str)
    form = parse_qs(body)
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    header, claims, signature = form["assertion"][0].split(".")
    assert json.loads(b64url_decode(header)) == {"alg": "RS256"}
    decoded = json.loads(b64url_decode(claims))
    assert {key: decoded[key] for key in ("iss", "sub", "aud")} == {
        "iss": CLIENT_ID, "sub": "intake@admitflow.example", "aud": login,
    }
    assert before + 170 <= decoded["exp"] <= int(time.time()) + 180
    public_key.verify(b64url_decode(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())


def test_it_reuses_the_token_for_later_calls(logged_in: responses.RequestsMock, crm: SalesforceCRM) -> None:
    logged_in.patch(NOTE_TASK, status=201, json={"id": TASK_ID, "success": True, "errors": []}, match=[bearer()])

    crm.add_note(LEAD_ID, "first", datetime(2025, 3, 4, tzinfo=UTC))
    crm.add_note(LEAD_ID, "second", datetime(2025, 3, 4, tzinfo=UTC))

    urls = [call.request.url for call in logged_in.calls]
    assert urls[0] == TOKEN_URL and all(NOTE_TASK.fullmatch(url) for url in urls[1:]) and len(urls) == 3


def test_it_fetches_one_fresh_token_when_the_session_has_expired(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.post(TOKEN_URL, json=token_answer(FRESH_TOKEN))
    logged_in.patch(NOTE_TASK, status=401, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"),
                   match=[bearer(TOKEN)])
    logged_in.patch(NOTE_TASK, status=201, json={"id": TASK_ID, "success": True, "errors": []},
                   match=[bearer(FRESH_TOKEN)])

    assert crm.add_note(LEAD_ID, MESSAGE, datetime(2025, 3, 4, tzinfo=UTC)) == TASK_ID
    urls = [call.request.url for call in logged_in.calls]
    assert [urls[0], urls[2]] == [TOKEN_URL, TOKEN_URL] and urls[1] == urls[3] and NOTE_TASK.fullmatch(urls[1])
    assert sent_json(logged_in.calls[3]) == sent_json(logged_in.calls[1])


def test_it_gives_up_naming_the_settings_when_the_fresh_token_is_refused_too(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.post(TOKEN_URL, json=token_answer(FRESH_TOKEN))
    logged_in.patch(NOTE_TASK, status=401, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"),
                   match=[bearer(TOKEN)])
    logged_in.patch(NOTE_TASK, status=401, json=sf_error("INVALID_SESSION_ID", "This session is not valid for REST"),
                   match=[bearer(FRESH_TOKEN)])

    with pytest.raises(Unauthorized) as caught:
        crm.add_note(LEAD_ID, MESSAGE, datetime(2025, 3, 4, tzinfo=UTC))

    assert caught.value.permanent
    assert "SALESFORCE_CLIENT_ID" in caught.value.message
    assert "SALESFORCE_LOGIN_URL" in caught.value.message
    assert len(logged_in.calls) == 4
    assert_phi_free(caught.value)


def test_it_reports_refused_client_credentials_as_permanent(
    salesforce: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    salesforce.post(TOKEN_URL, status=400,
                    json={"error": "invalid_client_id", "error_description": "client identifier invalid"})

    with pytest.raises(Unauthorized) as caught:
        crm.upsert_contact(card(), None)

    assert caught.value.permanent
    assert "invalid_client_id" in caught.value.message
    assert "SALESFORCE_CLIENT_SECRET" in caught.value.message
    assert_phi_free(caught.value)


def test_it_points_client_credentials_at_my_domain_when_salesforce_refuses_the_login_host(
    salesforce: responses.RequestsMock,
) -> None:
    salesforce.post("https://login.salesforce.com/services/oauth2/token", status=400,
                    json={"error": "invalid_grant", "error_description": "request not supported on this domain"})
    crm = SalesforceCRM(ClientCredentialsFlow("https://login.salesforce.com", CLIENT_ID, CLIENT_SECRET))

    with pytest.raises(Unauthorized, match="My Domain"):
        crm.upsert_contact(card(), None)


def test_it_tells_the_operator_to_preauthorize_the_jwt_user(salesforce: responses.RequestsMock) -> None:
    pem, _ = rsa_pem()
    salesforce.post(TOKEN_URL, status=400,
                    json={"error": "invalid_grant", "error_description": "user hasn't approved this consumer"})
    crm = SalesforceCRM(JwtBearerFlow(LOGIN, CLIENT_ID, "intake@admitflow.example", pem))

    with pytest.raises(Unauthorized, match="pre-authorize SALESFORCE_USERNAME") as caught:
        crm.upsert_contact(card(), None)

    assert "JWT bearer" in caught.value.message


@pytest.mark.parametrize("failure", [requests.ConnectionError("refused"), requests.Timeout("read timed out")])
def test_it_retries_when_the_login_cannot_be_reached(
    salesforce: responses.RequestsMock, crm: SalesforceCRM, failure: requests.RequestException
) -> None:
    salesforce.post(TOKEN_URL, body=failure)

    with pytest.raises(ServiceUnavailable) as caught:
        crm.upsert_contact(card(), None)

    assert not caught.value.permanent


def test_it_rejects_a_private_key_that_is_not_an_rsa_pem() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="RSA"):
        JwtBearerFlow(LOGIN, CLIENT_ID, "intake@admitflow.example", ec_pem)
    with pytest.raises(ValueError, match="SALESFORCE_PRIVATE_KEY_FILE") as caught:
        JwtBearerFlow(LOGIN, CLIENT_ID, "intake@admitflow.example", b"-----BEGIN PRIVATE KEY-----\nnope\n")
    assert caught.value.__cause__ is None


def test_it_requires_client_credentials() -> None:
    with pytest.raises(ValueError, match="SALESFORCE_CLIENT_SECRET"):
        ClientCredentialsFlow(LOGIN, CLIENT_ID, "")


def test_it_keeps_the_token_out_of_its_repr() -> None:
    assert TOKEN not in repr(AccessToken(TOKEN, INSTANCE))


def test_it_keeps_the_token_off_a_shared_session(logged_in: responses.RequestsMock) -> None:
    shared = requests.Session()
    logged_in.patch(NOTE_TASK, status=201, json={"id": TASK_ID, "success": True, "errors": []}, match=[bearer()])

    crm = SalesforceCRM(ClientCredentialsFlow(LOGIN, CLIENT_ID, CLIENT_SECRET, session=shared), session=shared)
    crm.add_note(LEAD_ID, MESSAGE, datetime(2025, 3, 4, tzinfo=UTC))

    assert "Authorization" not in shared.headers


# Leads


NEW_LEAD = {
    "FirstName": FIRST,
    "LastName": LAST,
    "Email": EMAIL,
    "Phone": PHONE,
    "Company": "Individual",
    "LeadSource": "Website",
}
PERSON = {"FirstName": FIRST, "LastName": LAST, "Email": EMAIL, "Phone": PHONE}


def test_it_creates_the_lead_keyed_by_the_lead_reference(logged_in: responses.RequestsMock, crm: SalesforceCRM) -> None:
    logged_in.patch(
        LEAD_BY_REF,
        status=201,
        json={"id": LEAD_ID, "success": True, "errors": [], "created": True},
        match=[bearer(), matchers.json_params_matcher(NEW_LEAD)],
    )

    assert crm.upsert_contact(card(), None) == LEAD_ID


def test_a_lead_save_asks_a_blocking_duplicate_rule_to_name_the_lead_it_matched_and_never_to_save_a_second(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    header = {"Sforce-Duplicate-Rule-Header": "allowSave=false; includeRecordDetails=true; runAsCurrentUser=true"}
    logged_in.patch(LEAD_BY_REF, status=201, json={"id": LEAD_ID, "success": True, "errors": [], "created": True},
                    match=[matchers.header_matcher(header)])

    assert crm.upsert_contact(card(), None) == LEAD_ID


def test_it_updates_only_the_persons_fields_on_a_lead_it_already_knows(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    # No Company or LeadSource: admissions may have changed them on this Lead.
    logged_in.patch(
        LEAD_BY_REF,
        json={"id": LEAD_ID, "success": True, "errors": [], "created": False},
        match=[bearer(), matchers.json_params_matcher(PERSON)],
    )

    assert crm.upsert_contact(card(), LEAD_ID) == LEAD_ID


def test_it_names_a_new_lead_unknown_when_the_form_had_no_last_name(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.patch(LEAD_BY_REF, status=201, json={"id": LEAD_ID, "success": True, "errors": [], "created": True})

    crm.upsert_contact(card(last_name=None, email=""), None)

    assert sent_json(logged_in.calls[1]) == {
        "FirstName": FIRST, "LastName": "(unknown)", "Phone": PHONE, "Company": "Individual", "LeadSource": "Website",
    }


def test_it_never_overwrites_a_known_leads_last_name_with_the_placeholder(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.patch(LEAD_BY_REF, json={"id": LEAD_ID, "success": True, "errors": [], "created": False})

    crm.upsert_contact(card(last_name=None), LEAD_ID)

    assert "LastName" not in sent_json(logged_in.calls[1])


def test_it_cuts_names_to_the_lengths_lead_allows(logged_in: responses.RequestsMock, crm: SalesforceCRM) -> None:
    logged_in.patch(LEAD_BY_REF, status=201, json={"id": LEAD_ID, "success": True, "errors": [], "created": True})

    crm.upsert_contact(card(first_name="Z" * 50, last_name="Q" * 90), None)

    sent = sent_json(logged_in.calls[1])
    assert (len(sent["FirstName"]), len(sent["LastName"])) == (40, 80)


def test_it_sends_configured_custom_fields(logged_in: responses.RequestsMock) -> None:
    crm = SalesforceCRM(
        ClientCredentialsFlow(LOGIN, CLIENT_ID, CLIENT_SECRET),
        lead_fields={"source": "Admitflow_Source__c", "repeat_count": "Admitflow_Repeats__c",
                     "consent_to_text": "Admitflow_Text_OK__c"},
    )
    logged_in.patch(
        LEAD_BY_REF,
        json={"id": LEAD_ID, "success": True, "errors": [], "created": False},
        match=[matchers.json_params_matcher(
            PERSON | {"Admitflow_Source__c": "main/form 3", "Admitflow_Repeats__c": 2, "Admitflow_Text_OK__c": True}
        )],
    )

    crm.upsert_contact(card(), LEAD_ID)


def test_it_reads_the_lead_id_by_external_id_when_an_update_answers_204(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    # Before API version 46.0 an upsert that updates answers 204 with no body.
    logged_in.patch(LEAD_BY_REF, status=204, match=[bearer()])
    logged_in.get(
        LEAD_BY_REF,
        json={"attributes": {"type": "Lead", "url": f"/services/data/v60.0/sobjects/Lead/{LEAD_ID}"}, "Id": LEAD_ID},
        match=[bearer(), matchers.query_param_matcher({"fields": "Id"})],
    )

    assert crm.upsert_contact(card(), LEAD_ID) == LEAD_ID


def test_it_recreates_a_known_lead_that_was_deleted_in_salesforce(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.patch(LEAD_BY_REF, status=400,
                    json=sf_error("REQUIRED_FIELD_MISSING", "Required fields are missing: [Company]", ["Company"]),
                    match=[matchers.json_params_matcher(PERSON)])
    logged_in.patch(LEAD_BY_REF, status=201, json={"id": "00Q5e00000Zeb002AAA", "success": True, "errors": [],
                                                   "created": True},
                    match=[matchers.json_params_matcher(NEW_LEAD)])

    assert crm.upsert_contact(card(), LEAD_ID) == "00Q5e00000Zeb002AAA"


def test_it_takes_over_the_lead_a_duplicate_rule_names(logged_in: responses.RequestsMock, crm: SalesforceCRM) -> None:
    # The rule also matched a Contact, which is not a Lead we can update.
    logged_in.patch(LEAD_BY_REF, status=400,
                    json=duplicate_error(("Contact", "0035e00000Zeb001AAA"), ("Lead", "00Q5e00000Old001AAA")))
    logged_in.patch(
        f"{DATA}/sobjects/Lead/00Q5e00000Old001AAA",
        status=204,
        match=[bearer(), matchers.json_params_matcher(PERSON | {"Admitflow_Ref__c": "L-7Q2"})],
    )

    assert crm.upsert_contact(card(), None) == "00Q5e00000Old001AAA"


def test_it_asks_for_an_allow_save_rule_when_a_duplicate_rule_names_no_lead(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.patch(LEAD_BY_REF, status=400, json=duplicate_error(("Contact", "0035e00000Zeb001AAA")))

    with pytest.raises(Conflict) as caught:
        crm.upsert_contact(card(), None)

    assert caught.value.permanent
    assert caught.value.existing_id is None
    assert "Standard_Lead_Duplicate_Rule" in caught.value.message
    assert "allow save" in caught.value.message
    assert_phi_free(caught.value)


def test_it_reports_a_duplicate_error_without_match_details_as_a_conflict(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.patch(LEAD_BY_REF, status=400, json=sf_error("DUPLICATES_DETECTED", f"Use one of these? {EMAIL}"))

    with pytest.raises(Conflict, match="allow save") as caught:
        crm.upsert_contact(card(), None)

    assert_phi_free(caught.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, sf_error("NOT_FOUND", "Provided external ID field does not exist or is not accessible: "
                                    "Admitflow_Ref__c")),
        (404, sf_error("NOT_FOUND", "The requested resource does not exist")),
        (400, sf_error("INVALID_FIELD", "Field Admitflow_Ref__c is not an External ID or indexed field for Lead")),
    ],
)
def test_it_tells_the_operator_to_create_the_external_id_field(
    logged_in: responses.RequestsMock, crm: SalesforceCRM, status: int, error: list[dict[str, Any]]
) -> None:
    logged_in.patch(LEAD_BY_REF, status=status, json=error)

    with pytest.raises(InvalidRequest) as caught:
        crm.upsert_contact(card(), None)

    assert caught.value.permanent
    assert "Admitflow_Ref__c" in caught.value.message
    assert "Text, Unique, External ID" in caught.value.message
    assert_phi_free(caught.value)


def test_it_reports_two_leads_with_one_reference_as_a_conflict(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    urls = [f"/services/data/v60.0/sobjects/Lead/00Q5e00000Zeb00{n}AAA" for n in (1, 2)]
    logged_in.patch(LEAD_BY_REF, status=300, json=urls)

    with pytest.raises(Conflict, match="Unique"):
        crm.upsert_contact(card(), None)


def test_it_reports_other_validation_errors_by_code_only(logged_in: responses.RequestsMock, crm: SalesforceCRM) -> None:
    logged_in.patch(LEAD_BY_REF, status=400,
                    json=sf_error("INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {EMAIL}", ["Email"]))

    with pytest.raises(InvalidRequest) as caught:
        crm.upsert_contact(card(), LEAD_ID)

    assert caught.value.permanent
    assert "INVALID_EMAIL_ADDRESS" in caught.value.message
    assert "ROSTER_FILE" not in caught.value.message
    assert len(logged_in.calls) == 2  # not retried: only a missing required field means the Lead is gone
    assert_phi_free(caught.value)


def test_it_refuses_to_update_a_converted_lead_permanently(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.patch(LEAD_BY_REF, status=400,
                    json=sf_error("CANNOT_UPDATE_CONVERTED_LEAD", f"cannot reference converted lead {LAST}"))

    with pytest.raises(InvalidRequest, match="converted") as caught:
        crm.upsert_contact(card(), LEAD_ID)

    assert_phi_free(caught.value)


def test_it_retries_when_salesforce_has_the_lead_locked(logged_in: responses.RequestsMock, crm: SalesforceCRM) -> None:
    logged_in.patch(LEAD_BY_REF, status=400,
                    json=sf_error("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record"))

    with pytest.raises(IntegrationError) as caught:
        crm.upsert_contact(card(), LEAD_ID)

    assert not caught.value.permanent


def test_it_checks_its_configuration() -> None:
    tokens = ClientCredentialsFlow(LOGIN, CLIENT_ID, CLIENT_SECRET)
    with pytest.raises(ValueError, match="Admitflow_Ref__c"):
        SalesforceCRM(tokens, external_id_field="Admitflow Ref")
    with pytest.raises(ValueError, match="unknown card attributes"):
        SalesforceCRM(tokens, lead_fields={"email": "Other_Email__c"})
    with pytest.raises(ValueError, match=r"60\.0"):
        SalesforceCRM(tokens, api_version="v60")


# Notes and callback tasks


def test_it_records_the_message_as_a_completed_task_on_the_lead_dated_by_the_centers_calendar() -> None:
    note = {
        "Subject": "Website request",
        "Description": MESSAGE,
        "WhoId": LEAD_ID,
        "Status": "Completed",
        "ActivityDate": "2025-03-04",  # 03:30 on the 5th in UTC
    }
    crm = SalesforceCRM(ClientCredentialsFlow(LOGIN, CLIENT_ID, CLIENT_SECRET),
                        center_timezone=ZoneInfo("America/New_York"))
    with responses.RequestsMock() as salesforce:
        salesforce.post(TOKEN_URL, json=token_answer())
        salesforce.patch(NOTE_TASK, status=201, json={"id": TASK_ID, "success": True, "created": True, "errors": []},
                         match=[bearer(), matchers.json_params_matcher(note)])

        assert crm.add_note(LEAD_ID, MESSAGE, datetime(2025, 3, 5, 3, 30, tzinfo=UTC)) == TASK_ID


def test_a_note_sent_again_after_a_lost_answer_updates_the_same_task(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    text = "Website request L-7Q2 (form 3, entry 42):\n\nplease call"
    logged_in.patch(NOTE_TASK, status=201, json={"id": TASK_ID, "success": True, "created": True, "errors": []})
    logged_in.patch(NOTE_TASK, status=200, json={"id": TASK_ID, "success": True, "created": False, "errors": []})

    first = crm.add_note(LEAD_ID, text, datetime(2025, 3, 4, tzinfo=UTC))
    again = crm.add_note(LEAD_ID, text, datetime(2025, 3, 4, tzinfo=UTC), look_first=True)

    assert first == again == TASK_ID
    assert logged_in.calls[1].request.url == logged_in.calls[2].request.url, "one key for one request's note"


def test_it_upserts_the_callback_task_for_its_owner_on_the_lead_by_the_lead_reference(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    created = {
        "Subject": "Callback L-7Q2",
        "Description": f"{FIRST} asked for a call: {MESSAGE}",
        "WhoId": LEAD_ID,
        "Priority": "High",
        "Status": "Not Started",
        "ActivityDate": "2025-03-04",
        "IsReminderSet": True,
        "ReminderDateTime": "2025-03-04T15:30:00.000Z",
        "OwnerId": "0055e000001OwnrAAA",
    }
    logged_in.patch(CALLBACK_TASK, status=201, json={"id": TASK_ID, "success": True, "created": True, "errors": []},
                    match=[bearer(), matchers.json_params_matcher(created)])
    logged_in.patch(CALLBACK_TASK, status=200, json={"id": TASK_ID, "success": True, "created": False, "errors": []})

    assert crm.ensure_callback_task(LEAD_ID, callback()) == TASK_ID
    assert crm.ensure_callback_task(LEAD_ID, callback()) == TASK_ID, "a second save updates the one task"


def test_the_callback_tasks_due_date_is_the_centers_date_not_utcs() -> None:
    crm = SalesforceCRM(ClientCredentialsFlow(LOGIN, CLIENT_ID, CLIENT_SECRET),
                        center_timezone=ZoneInfo("America/Los_Angeles"))
    with responses.RequestsMock() as salesforce:
        salesforce.post(TOKEN_URL, json=token_answer())
        salesforce.patch(CALLBACK_TASK, status=201, json={"id": TASK_ID, "success": True, "errors": []})
        crm.ensure_callback_task(LEAD_ID, callback(due_at=datetime(2025, 3, 5, 2, 0, tzinfo=UTC)))

        sent = sent_json(salesforce.calls[1])
    assert (sent["ActivityDate"], sent["ReminderDateTime"]) == ("2025-03-04", "2025-03-05T02:00:00.000Z")


def test_it_reads_the_task_id_by_its_key_when_an_upsert_answers_204(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.patch(CALLBACK_TASK, status=204)
    logged_in.get(CALLBACK_TASK, json={"attributes": {"type": "Task"}, "Id": TASK_ID},
                  match=[matchers.query_param_matcher({"fields": "Id"})])

    assert crm.ensure_callback_task(LEAD_ID, callback()) == TASK_ID


def test_it_tells_the_operator_to_create_the_task_external_id_field(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.patch(CALLBACK_TASK, status=404, json=sf_error(
        "NOT_FOUND", "Provided external ID field does not exist or is not accessible: Admitflow_Key__c"))

    with pytest.raises(InvalidRequest, match="Admitflow_Key__c on Task") as caught:
        crm.ensure_callback_task(LEAD_ID, callback())

    assert caught.value.permanent and "SALESFORCE_TASK_EXTERNAL_ID_FIELD" in caught.value.message


def test_it_leaves_the_task_with_the_integration_user_when_the_roster_names_no_owner(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.patch(CALLBACK_TASK, status=201, json={"id": TASK_ID, "success": True, "errors": []})

    crm.ensure_callback_task(LEAD_ID, callback(owner_id=None))

    assert "OwnerId" not in sent_json(logged_in.calls[1])


@pytest.mark.parametrize(
    "rejection",
    [
        sf_error("FIELD_INTEGRITY_EXCEPTION", f"Assigned To ID: id value of incorrect type for {FIRST}", ["OwnerId"]),
        sf_error("INVALID_CROSS_REFERENCE_KEY", "Assigned To ID: owner cannot be blank", ["OwnerId"]),
        sf_error("INACTIVE_OWNER_OR_USER", "operation performed with inactive user as owner"),
    ],
)
def test_it_tells_the_operator_to_fix_the_roster_when_salesforce_rejects_the_owner(
    logged_in: responses.RequestsMock, crm: SalesforceCRM, rejection: list[dict[str, Any]]
) -> None:
    logged_in.patch(CALLBACK_TASK, status=400, json=rejection)

    with pytest.raises(InvalidRequest) as caught:
        crm.ensure_callback_task(LEAD_ID, callback())

    assert caught.value.permanent
    assert "ROSTER_FILE" in caught.value.message
    assert "005" in caught.value.message
    assert_phi_free(caught.value)


# Limits and failures


@pytest.mark.parametrize(("status", "headers"), [(403, {}), (429, {"Retry-After": "7"})])
def test_it_retries_later_when_the_api_request_limit_is_used_up(
    logged_in: responses.RequestsMock, crm: SalesforceCRM, status: int, headers: dict[str, str]
) -> None:
    logged_in.patch(CALLBACK_TASK, status=status, headers=headers,
                    json=sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))

    with pytest.raises(RateLimited) as caught:
        crm.ensure_callback_task(LEAD_ID, callback())

    assert not caught.value.permanent
    assert caught.value.retry_after == (7.0 if headers else None)
    assert len(logged_in.calls) == 2  # no new token: the limit is not a credentials problem


def test_it_reports_other_refusals_as_missing_permissions(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    logged_in.patch(NOTE_TASK, status=403, json=sf_error("API_DISABLED_FOR_ORG", "API is not enabled for this org"))

    with pytest.raises(Unauthorized, match="API Enabled") as caught:
        crm.add_note(LEAD_ID, MESSAGE, datetime(2025, 3, 4, tzinfo=UTC))

    assert caught.value.permanent
    assert "API_DISABLED_FOR_ORG" in caught.value.message


def test_it_reports_a_missing_record_as_not_found(logged_in: responses.RequestsMock, crm: SalesforceCRM) -> None:
    missing = sf_error("NOT_FOUND", "The requested resource does not exist")
    logged_in.patch(f"{TASKS}/{TASK_ID}", status=404, json=missing)

    with pytest.raises(NotFound) as caught:
        crm.complete_callback_task(TASK_ID)

    assert caught.value.permanent
    assert_phi_free(caught.value)


def test_it_reports_a_conflicting_state_as_permanent(logged_in: responses.RequestsMock, crm: SalesforceCRM) -> None:
    logged_in.patch(NOTE_TASK, status=409, json=sf_error("CONFLICT", f"conflict on {FIRST}"))

    with pytest.raises(InvalidRequest) as caught:
        crm.add_note(LEAD_ID, MESSAGE, datetime(2025, 3, 4, tzinfo=UTC))

    assert caught.value.permanent
    assert caught.value.status == 409
    assert_phi_free(caught.value)


def test_it_retries_when_salesforce_fails(logged_in: responses.RequestsMock, crm: SalesforceCRM) -> None:
    logged_in.patch(NOTE_TASK, status=503, json=sf_error("SERVER_UNAVAILABLE", f"failed on {MESSAGE}"))

    with pytest.raises(ServiceUnavailable) as caught:
        crm.add_note(LEAD_ID, MESSAGE, datetime(2025, 3, 4, tzinfo=UTC))

    assert not caught.value.permanent
    assert caught.value.status == 503
    assert_phi_free(caught.value)


@pytest.mark.parametrize("failure", [requests.ConnectionError("refused"), requests.Timeout("read timed out")])
def test_it_retries_when_salesforce_cannot_be_reached(
    logged_in: responses.RequestsMock, crm: SalesforceCRM, failure: requests.RequestException
) -> None:
    logged_in.patch(LEAD_BY_REF, body=failure)

    with pytest.raises(ServiceUnavailable) as caught:
        crm.upsert_contact(card(), None)

    assert not caught.value.permanent
    assert_phi_free(caught.value)


def test_it_retries_when_an_answer_cannot_be_read(logged_in: responses.RequestsMock, crm: SalesforceCRM) -> None:
    # pydantic quotes what it rejects, so its error must not travel with ours.
    logged_in.patch(CALLBACK_TASK, json={"id": None, "success": True, "Name": f"{FIRST} {LAST}"})

    with pytest.raises(ServiceUnavailable) as caught:
        crm.ensure_callback_task(LEAD_ID, callback())

    assert not caught.value.permanent
    assert_phi_free(caught.value)


def test_it_gives_the_callback_task_to_the_staff_member_who_claimed_it(
    logged_in: responses.RequestsMock, crm: SalesforceCRM
) -> None:
    patch = logged_in.patch(f"{DATA}/sobjects/Task/00T5e000001TaskAAA", status=204)

    crm.assign_callback_task("00T5e000001TaskAAA", "0055e000001ClmrAAA")

    assert patch.call_count == 1
    assert sent_json(patch.calls[0]) == {"OwnerId": "0055e000001ClmrAAA"}
    assert patch.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"

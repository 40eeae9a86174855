from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from integrations.crm import CallbackTaskSpec, ContactCard
from integrations.errors import (
    Conflict,
    IntegrationError,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from integrations.hubspot.client import HubSpotCRM

API = "https://api.hubapi.com"
CONTACTS = f"{API}/crm/v3/objects/contacts"
NOTES = f"{API}/crm/v3/objects/notes"
TASKS = f"{API}/crm/v3/objects/tasks"
TOKEN = "pat-na1-00000000-test"
AUTHORIZED = matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})

# Fictional person; every value is distinctive so a leak into an error message is easy to spot.
FIRST, LAST, EMAIL, PHONE = "Zebulon", "Quixotl-Canary", "zeb.canary@example.org", "+15555550142"
MESSAGE = "I can't sleep & I drink <a lot>\nplease call after 5"
PHI = [FIRST, LAST, EMAIL, PHONE, "can't sleep", "drink"]


def card(**overrides: Any) -> ContactCard:
    values: dict[str, Any] = {
        "lead_ref": "L-7Q2",
        "first_name": FIRST,
        "last_name": LAST,
        "email": EMAIL,
        "phone": PHONE,
        "repeat_count": 0,
        "source": "main/form 3",
        "consent_to_text": True,
    }
    return ContactCard(**(values | overrides))


def callback(owner_id: str | None = "4242") -> CallbackTaskSpec:
    return CallbackTaskSpec(
        lead_ref="L-7Q2",
        subject="Call back new inquiry L-7Q2",
        body=f"{FIRST} asked for a call: {MESSAGE}",
        owner_id=owner_id,
        due_at=datetime(2025, 3, 4, 15, 30, tzinfo=UTC),
    )


def search_body(*groups: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "filterGroups": [
            {"filters": [{"propertyName": name, "operator": "EQ", "value": value} for name, value in group]}
            for group in groups
        ],
        "properties": ["hs_object_id"],
        "limit": 1,
    }


def found(*ids: str) -> dict[str, Any]:
    return {"total": len(ids), "results": [{"id": id_, "properties": {"hs_object_id": id_}} for id_ in ids]}


def linked_to(contact_id: str, association_type_id: int) -> list[dict[str, Any]]:
    association_type = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": association_type_id}
    return [{"to": {"id": contact_id}, "types": [association_type]}]


def hubspot_error(category: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"status": "error", "message": message, "correlationId": "c0ffee", "category": category, **extra}


def assert_phi_free(error: IntegrationError) -> None:
    shown = "".join(traceback.format_exception(error))
    for value in PHI:
        assert value not in shown


@pytest.fixture
def hubspot() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def crm() -> HubSpotCRM:
    return HubSpotCRM(TOKEN)


def test_it_creates_a_new_lead_when_no_contact_has_the_email(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    hubspot.post(
        f"{CONTACTS}/search",
        json=found(),
        match=[AUTHORIZED, matchers.json_params_matcher(search_body([("email", EMAIL)]))],
    )
    new_lead = {
        "firstname": FIRST,
        "lastname": LAST,
        "email": EMAIL,
        "phone": PHONE,
        "hs_lead_status": "NEW",
        "lifecyclestage": "lead",
    }
    hubspot.post(
        CONTACTS,
        status=201,
        json={"id": "501", "properties": {}},
        match=[AUTHORIZED, matchers.json_params_matcher({"properties": new_lead})],
    )

    assert crm.upsert_contact(card(), None) == "501"


def test_it_updates_the_existing_contact_found_by_email(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    hubspot.post(f"{CONTACTS}/search", json=found("301"))
    # No lead status or lifecycle stage: admissions may already have moved this person on.
    hubspot.patch(
        f"{CONTACTS}/301",
        json={"id": "301"},
        match=[
            AUTHORIZED,
            matchers.json_params_matcher(
                {"properties": {"firstname": FIRST, "lastname": LAST, "email": EMAIL, "phone": PHONE}}
            ),
        ],
    )

    assert crm.upsert_contact(card(), None) == "301"
    assert [call.request.method for call in hubspot.calls] == ["POST", "PATCH"]


def test_it_searches_phone_and_mobile_phone_when_the_card_has_no_email(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    hubspot.post(
        f"{CONTACTS}/search",
        json=found("302"),
        match=[matchers.json_params_matcher(search_body([("phone", PHONE)], [("mobilephone", PHONE)]))],
    )
    hubspot.patch(
        f"{CONTACTS}/302",
        json={"id": "302"},
        match=[matchers.json_params_matcher({"properties": {"firstname": FIRST, "phone": PHONE}})],
    )

    assert crm.upsert_contact(card(email=None, last_name=None), None) == "302"


def test_it_updates_the_contact_hubspot_names_when_create_conflicts(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    hubspot.post(f"{CONTACTS}/search", json=found())
    conflict = hubspot_error("CONFLICT", "Contact already exists. Existing ID: 12345")
    hubspot.post(CONTACTS, status=409, json=conflict)
    hubspot.patch(
        f"{CONTACTS}/12345",
        json={"id": "12345"},
        match=[
            matchers.json_params_matcher(
                {"properties": {"firstname": FIRST, "lastname": LAST, "email": EMAIL, "phone": PHONE}}
            )
        ],
    )

    assert crm.upsert_contact(card(), None) == "12345"


def test_it_reports_a_conflict_it_cannot_resolve_as_permanent(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    hubspot.post(f"{CONTACTS}/search", json=found())
    hubspot.post(CONTACTS, status=409, json=hubspot_error("CONFLICT", f"{EMAIL} is taken"))

    with pytest.raises(Conflict) as caught:
        crm.upsert_contact(card(), None)

    assert caught.value.permanent
    assert caught.value.existing_id is None
    assert "CONFLICT" in caught.value.message
    assert_phi_free(caught.value)


def test_it_patches_the_known_contact_without_searching(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    hubspot.patch(
        f"{CONTACTS}/777",
        json={"id": "777"},
        match=[AUTHORIZED, matchers.json_params_matcher({"properties": {"email": EMAIL, "phone": PHONE}})],
    )

    assert crm.upsert_contact(card(first_name=None, last_name=""), "777") == "777"
    assert len(hubspot.calls) == 1


def test_it_attaches_the_message_as_an_escaped_note(hubspot: responses.RequestsMock, crm: HubSpotCRM) -> None:
    note = {
        "properties": {
            "hs_note_body": "I can&#x27;t sleep &amp; I drink &lt;a lot&gt;<br>please call after 5",
            "hs_timestamp": "2025-03-04T15:30:00.000Z",
        },
        "associations": linked_to("501", 202),
    }
    hubspot.post(NOTES, json={"id": "8001"}, match=[AUTHORIZED, matchers.json_params_matcher(note)])

    eastern = timezone(timedelta(hours=-5))
    assert crm.add_note("501", MESSAGE, datetime(2025, 3, 4, 10, 30, tzinfo=eastern)) == "8001"


def test_it_takes_a_naive_note_time_as_utc(hubspot: responses.RequestsMock, crm: HubSpotCRM) -> None:
    hubspot.post(NOTES, status=201, json={"id": "8002"})

    crm.add_note("501", "hello", datetime(2025, 3, 4, 15, 30))

    sent = json.loads(hubspot.calls[0].request.body or "{}")
    assert sent["properties"]["hs_timestamp"] == "2025-03-04T15:30:00.000Z"


def test_it_creates_the_callback_task_for_its_owner_on_the_contact(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    task = callback()
    hubspot.post(
        f"{TASKS}/search",
        json=found(),
        match=[
            AUTHORIZED,
            matchers.json_params_matcher(
                search_body([("hs_task_subject", task.subject), ("associations.contact", "501")])
            ),
        ],
    )
    created = {
        "properties": {
            "hs_task_subject": "Call back new inquiry L-7Q2",
            "hs_task_body": f"{FIRST} asked for a call: I can&#x27;t sleep &amp; I drink &lt;a lot&gt;<br>"
            "please call after 5",
            "hs_timestamp": "2025-03-04T15:30:00.000Z",
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": "HIGH",
            "hs_task_type": "CALL",
            "hubspot_owner_id": "4242",
        },
        "associations": linked_to("501", 204),
    }
    hubspot.post(TASKS, json={"id": "9001"}, match=[AUTHORIZED, matchers.json_params_matcher(created)])

    assert crm.ensure_callback_task("501", task) == "9001"


def test_it_leaves_the_task_unassigned_when_the_roster_names_no_owner(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    hubspot.post(f"{TASKS}/search", json=found())
    hubspot.post(TASKS, status=201, json={"id": "9002"})

    crm.ensure_callback_task("501", callback(owner_id=None))

    sent = json.loads(hubspot.calls[1].request.body or "{}")
    assert "hubspot_owner_id" not in sent["properties"]


def test_a_retried_call_never_creates_a_second_task(hubspot: responses.RequestsMock, crm: HubSpotCRM) -> None:
    hubspot.post(f"{TASKS}/search", json=found())
    hubspot.post(TASKS, status=201, json={"id": "9001"})
    hubspot.post(f"{TASKS}/search", json=found("9001"))

    first = crm.ensure_callback_task("501", callback())
    retried = crm.ensure_callback_task("501", callback())

    assert first == retried == "9001"
    assert [call.request.url for call in hubspot.calls].count(TASKS) == 1


@pytest.mark.parametrize(
    "rejection",
    [
        # What the object endpoints send today: the details are JSON inside the message.
        hubspot_error(
            "VALIDATION_ERROR",
            'Property values were not valid: [{"isValid":false,"message":"4242 is not a valid owner id for '
            f'{FIRST}","error":"INVALID_OWNER_ID","name":"hubspot_owner_id"}}]',
        ),
        hubspot_error(
            "VALIDATION_ERROR",
            "One or more validation errors occurred",
            errors=[{"message": f"bad owner for {EMAIL}", "context": {"propertyName": ["hubspot_owner_id"]}}],
        ),
    ],
)
def test_it_tells_the_operator_to_fix_the_roster_when_hubspot_rejects_the_owner(
    hubspot: responses.RequestsMock, crm: HubSpotCRM, rejection: dict[str, Any]
) -> None:
    hubspot.post(f"{TASKS}/search", json=found())
    hubspot.post(TASKS, status=400, json=rejection)

    with pytest.raises(InvalidRequest) as caught:
        crm.ensure_callback_task("501", callback())

    assert caught.value.permanent
    assert "ROSTER_FILE" in caught.value.message
    assert "not a valid owner id" not in caught.value.message
    assert_phi_free(caught.value)


def test_it_reports_other_validation_errors_by_category_only(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    hubspot.patch(
        f"{CONTACTS}/777",
        status=400,
        json=hubspot_error(
            "VALIDATION_ERROR",
            f'Property values were not valid: [{{"message":"{EMAIL} is invalid","name":"email"}}]',
        ),
    )

    with pytest.raises(InvalidRequest) as caught:
        crm.upsert_contact(card(), "777")

    assert caught.value.permanent
    assert "VALIDATION_ERROR" in caught.value.message
    assert "ROSTER_FILE" not in caught.value.message
    assert_phi_free(caught.value)


def test_it_reports_a_rejected_token_as_permanent_and_names_hubspot_token(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    hubspot.post(
        f"{CONTACTS}/search",
        status=401,
        json=hubspot_error("INVALID_AUTHENTICATION", "Authentication credentials not found."),
    )

    with pytest.raises(Unauthorized) as caught:
        crm.upsert_contact(card(), None)

    assert caught.value.permanent
    assert "HUBSPOT_TOKEN" in caught.value.message
    assert TOKEN not in caught.value.message
    assert_phi_free(caught.value)


def test_it_passes_on_retry_after_when_rate_limited(hubspot: responses.RequestsMock, crm: HubSpotCRM) -> None:
    hubspot.post(
        f"{CONTACTS}/search",
        status=429,
        headers={"Retry-After": "7"},
        json=hubspot_error("RATE_LIMITS", f"Too many searches for {EMAIL}"),
    )

    with pytest.raises(RateLimited) as caught:
        crm.upsert_contact(card(), None)

    assert caught.value.retry_after == 7.0
    assert not caught.value.permanent
    assert_phi_free(caught.value)


def test_it_retries_when_hubspot_fails(hubspot: responses.RequestsMock, crm: HubSpotCRM) -> None:
    hubspot.post(NOTES, status=500, json=hubspot_error("INTERNAL_ERROR", f"failed on {MESSAGE}"))

    with pytest.raises(ServiceUnavailable) as caught:
        crm.add_note("501", MESSAGE, datetime(2025, 3, 4, tzinfo=UTC))

    assert not caught.value.permanent
    assert caught.value.status == 500
    assert_phi_free(caught.value)


@pytest.mark.parametrize("failure", [requests.ConnectionError("refused"), requests.Timeout("read timed out")])
def test_it_retries_when_hubspot_cannot_be_reached(
    hubspot: responses.RequestsMock, crm: HubSpotCRM, failure: requests.RequestException
) -> None:
    hubspot.post(f"{CONTACTS}/search", body=failure)

    with pytest.raises(ServiceUnavailable) as caught:
        crm.upsert_contact(card(), None)

    assert not caught.value.permanent
    assert_phi_free(caught.value)


def test_it_retries_when_an_answer_cannot_be_read(hubspot: responses.RequestsMock, crm: HubSpotCRM) -> None:
    # pydantic quotes what it rejects, so its error must not travel with ours.
    hubspot.post(f"{CONTACTS}/search", json={"total": 1, "results": {"firstname": FIRST}})

    with pytest.raises(ServiceUnavailable) as caught:
        crm.upsert_contact(card(), None)

    assert not caught.value.permanent
    assert_phi_free(caught.value)


def test_it_keeps_the_token_off_a_shared_session(hubspot: responses.RequestsMock) -> None:
    shared = requests.Session()
    hubspot.patch(f"{CONTACTS}/777", json={"id": "777"}, match=[AUTHORIZED])

    HubSpotCRM(TOKEN, session=shared).upsert_contact(card(), "777")

    assert "Authorization" not in shared.headers


def test_it_requires_a_token() -> None:
    with pytest.raises(ValueError, match="HUBSPOT_TOKEN"):
        HubSpotCRM("")

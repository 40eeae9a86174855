"""HUBSPOT_CUSTOM_PROPERTIES: our lead reference, source form, repeat count and consent on the contact, and new
contacts upserted by the lead reference (a unique-value property) so a repeated push cannot create a second one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses
from pydantic import SecretStr
from responses import matchers

from config.settings import Settings
from integrations.errors import InvalidRequest
from integrations.hubspot.client import HubSpotCRM
from tests.integrations.test_hubspot import (
    AUTHORIZED,
    CONTACTS,
    EMAIL,
    FIRST,
    LAST,
    PHONE,
    TOKEN,
    assert_phi_free,
    card,
    found,
    hubspot_error,
    search_body,
)
from worker.staff.services import crm_from_settings

UPSERT = f"{CONTACTS}/batch/upsert"
OURS = {
    "admitflow_lead_ref": "L-7Q2",
    "admitflow_source_form": "main/form 3",
    "admitflow_repeat_count": "2",
    "admitflow_consent": "true",
}


@pytest.fixture
def hubspot() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def crm() -> HubSpotCRM:
    return HubSpotCRM(TOKEN, custom_properties=True)


def test_a_new_contact_is_upserted_by_the_lead_reference_with_our_properties(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    by_email = matchers.json_params_matcher(search_body([("email", EMAIL)]))
    hubspot.post(f"{CONTACTS}/search", json=found(), match=[by_email])
    properties = {"firstname": FIRST, "lastname": LAST, "email": EMAIL, "phone": PHONE, **OURS,
                  "hs_lead_status": "NEW", "lifecyclestage": "lead"}
    body = {"inputs": [{"id": "L-7Q2", "idProperty": "admitflow_lead_ref", "properties": properties}]}
    hubspot.post(UPSERT, json={"status": "COMPLETE", "results": [{"id": "501", "new": True, "properties": {}}]},
                 match=[AUTHORIZED, matchers.json_params_matcher(body)])

    assert crm.upsert_contact(card(repeat_count=2, consent=True), None) == "501"


def test_a_repeated_push_lands_on_the_contact_the_lead_reference_names(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    # Search has not caught up with the contact the lost first push created; the unique property has.
    hubspot.post(f"{CONTACTS}/search", json=found())
    hubspot.post(UPSERT, json={"status": "COMPLETE", "results": [{"id": "501", "new": False, "properties": {}}]})

    assert crm.upsert_contact(card(repeat_count=2, consent=True), None) == "501"


def test_a_known_contact_gets_our_properties_on_update(hubspot: responses.RequestsMock, crm: HubSpotCRM) -> None:
    properties = {"firstname": FIRST, "lastname": LAST, "email": EMAIL, "phone": PHONE, **OURS}
    hubspot.patch(f"{CONTACTS}/301", json={"id": "301", "properties": {}},
                  match=[matchers.json_params_matcher({"properties": properties})])

    assert crm.upsert_contact(card(repeat_count=2, consent=True), "301") == "301"


def test_consent_not_asked_is_left_out() -> None:
    crm = HubSpotCRM(TOKEN, custom_properties=True)
    with responses.RequestsMock() as hubspot:
        patch = hubspot.patch(f"{CONTACTS}/301", json={"id": "301", "properties": {}})
        crm.upsert_contact(card(), "301")
    assert b"admitflow_consent" not in (patch.calls[0].request.body or b"")


def test_a_missing_custom_property_tells_the_operator_to_create_it_or_turn_the_setting_off(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    hubspot.post(f"{CONTACTS}/search", json=found())
    message = f'Property values were not valid: [{{"isValid":false,"message":"{EMAIL}","name":"admitflow_lead_ref"}}]'
    hubspot.post(UPSERT, status=400, json=hubspot_error("VALIDATION_ERROR", message))

    with pytest.raises(InvalidRequest) as caught:
        crm.upsert_contact(card(), None)

    assert caught.value.permanent
    assert "admitflow_lead_ref" in caught.value.message and "HUBSPOT_CUSTOM_PROPERTIES=false" in caught.value.message
    assert_phi_free(caught.value)


def test_custom_properties_are_off_unless_the_setting_turns_them_on(settings: Settings) -> None:
    with_token = settings.model_copy(update={"hubspot_token": SecretStr("pat-na1-test")})
    sent = []
    for configured in (with_token, with_token.model_copy(update={"hubspot_custom_properties": True})):
        with responses.RequestsMock() as hubspot:
            patch = hubspot.patch(f"{CONTACTS}/301", json={"id": "301", "properties": {}})
            crm_from_settings(configured).upsert_contact(card(), "301")
        sent.append(b"admitflow_lead_ref" in (patch.calls[0].request.body or b""))

    assert sent == [False, True]

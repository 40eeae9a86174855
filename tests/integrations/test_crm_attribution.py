"""Where a new lead came from, in CRM fields: HubSpot contact properties (HUBSPOT_ATTRIBUTION_PROPERTIES) and
Salesforce Lead fields (SALESFORCE_LEAD_FIELDS), written when the record is created, never over an existing one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses
from pydantic import SecretStr
from responses import matchers

from config.settings import Settings
from integrations.errors import InvalidRequest
from integrations.hubspot.client import HubSpotCRM
from integrations.salesforce.auth import ClientCredentialsFlow
from integrations.salesforce.client import SalesforceCRM
from tests.integrations import test_hubspot as hs
from tests.integrations import test_salesforce as sf
from worker.staff.services import CrmConfigurationError, crm_from_settings

CAME_FROM = {"utm_source": "google", "utm_medium": "cpc", "gclid": "Cj0KCQ-test",
             "form_page": "https://clinic.example.org/contact/?utm_source=google"}


@pytest.fixture
def hubspot() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def test_hubspot_gets_the_attribution_properties_on_a_new_contact(hubspot: responses.RequestsMock) -> None:
    crm = HubSpotCRM(hs.TOKEN, attribution_properties=True)
    hubspot.post(f"{hs.CONTACTS}/search", json=hs.found())
    expected = {"firstname": hs.FIRST, "lastname": hs.LAST, "email": hs.EMAIL, "phone": hs.PHONE,
                "hs_lead_status": "NEW", "lifecyclestage": "lead", "admitflow_utm_source": "google",
                "admitflow_utm_medium": "cpc", "admitflow_gclid": "Cj0KCQ-test",
                "admitflow_form_page": "https://clinic.example.org/contact/?utm_source=google"}
    hubspot.post(hs.CONTACTS, json={"id": "501"}, match=[matchers.json_params_matcher({"properties": expected})])

    assert crm.upsert_contact(hs.card(attribution=CAME_FROM), None) == "501"


def test_hubspot_never_overwrites_an_existing_contacts_first_source(hubspot: responses.RequestsMock) -> None:
    crm = HubSpotCRM(hs.TOKEN, attribution_properties=True)
    person = {"firstname": hs.FIRST, "lastname": hs.LAST, "email": hs.EMAIL, "phone": hs.PHONE}
    hubspot.patch(f"{hs.CONTACTS}/501", json={"id": "501"},
                  match=[matchers.json_params_matcher({"properties": person})])

    crm.upsert_contact(hs.card(attribution=CAME_FROM), "501")


def test_without_the_setting_hubspot_gets_no_attribution_property(hubspot: responses.RequestsMock) -> None:
    hubspot.post(f"{hs.CONTACTS}/search", json=hs.found())
    hubspot.post(hs.CONTACTS, json={"id": "501"})

    HubSpotCRM(hs.TOKEN).upsert_contact(hs.card(attribution=CAME_FROM), None)

    assert b"admitflow_utm_source" not in (hubspot.calls[1].request.body or b"")


def test_a_missing_attribution_property_says_to_create_it_or_turn_the_setting_off(
    hubspot: responses.RequestsMock,
) -> None:
    hubspot.post(f"{hs.CONTACTS}/search", json=hs.found())
    hubspot.post(hs.CONTACTS, status=400, json=hs.hubspot_error(
        "VALIDATION_ERROR", 'Property values were not valid: [{"name":"admitflow_gclid"}]'))

    with pytest.raises(InvalidRequest, match=r"admitflow_gclid .*HUBSPOT_ATTRIBUTION_PROPERTIES=false") as raised:
        HubSpotCRM(hs.TOKEN, attribution_properties=True).upsert_contact(hs.card(attribution=CAME_FROM), None)
    assert raised.value.permanent


@pytest.fixture
def salesforce() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.post(sf.TOKEN_URL, json=sf.token_answer())
        yield mock


def salesforce_crm() -> SalesforceCRM:
    return SalesforceCRM(ClientCredentialsFlow(sf.LOGIN, sf.CLIENT_ID, sf.CLIENT_SECRET),
                         lead_fields={"utm_source": "UTM_Source__c", "gclid": "GCLID__c", "referrer": "Referrer__c"})


def test_salesforce_writes_mapped_attribution_fields_when_it_creates_the_lead(
    salesforce: responses.RequestsMock,
) -> None:
    created = {"id": sf.LEAD_ID, "success": True, "errors": [], "created": True}
    salesforce.patch(sf.LEAD_BY_REF, status=201, json=created,
                     match=[matchers.json_params_matcher({**sf.NEW_LEAD, "UTM_Source__c": "google",
                                                          "GCLID__c": "Cj0KCQ-test"})])

    salesforce_crm().upsert_contact(sf.card(attribution=CAME_FROM), None)


def test_salesforce_leaves_attribution_off_a_lead_it_already_knows(salesforce: responses.RequestsMock) -> None:
    salesforce.patch(sf.LEAD_BY_REF, json={"id": sf.LEAD_ID, "success": True, "errors": [], "created": False},
                     match=[matchers.json_params_matcher(sf.PERSON)])

    salesforce_crm().upsert_contact(sf.card(attribution=CAME_FROM), sf.LEAD_ID)


def test_salesforce_lead_fields_come_from_the_setting_and_a_bad_key_stops_loudly(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "salesforce_client_id", "client")
    monkeypatch.setattr(settings, "salesforce_client_secret", SecretStr("secret"))
    monkeypatch.setattr(settings, "salesforce_lead_fields", "utm_source=UTM_Source__c, gclid=GCLID__c")
    assert settings.salesforce_lead_field_map == {"utm_source": "UTM_Source__c", "gclid": "GCLID__c"}
    assert isinstance(crm_from_settings(settings, "salesforce"), SalesforceCRM)

    monkeypatch.setattr(settings, "salesforce_lead_fields", "utm_sauce=UTM_Source__c")
    with pytest.raises(CrmConfigurationError, match="lead_fields maps unknown card attributes \\['utm_sauce'\\]"):
        crm_from_settings(settings, "salesforce")

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from config.settings import Settings
from integrations.crm import LogOnlyCRM
from integrations.hubspot.client import HubSpotCRM
from integrations.salesforce.client import SalesforceCRM
from worker.staff.services import CrmConfigurationError, build_services, crm_from_settings

SALESFORCE = {"salesforce_client_id": "3MVG9-test", "salesforce_client_secret": SecretStr("sf-secret")}


def test_without_crm_credentials_the_crm_is_log_only(settings: Settings) -> None:
    assert isinstance(crm_from_settings(settings), LogOnlyCRM)


def test_hubspot_is_used_whenever_its_token_is_set(settings: Settings) -> None:
    configured = settings.model_copy(update={"hubspot_token": SecretStr("pat-na1-test"), **SALESFORCE})
    assert isinstance(crm_from_settings(configured), HubSpotCRM)


def test_salesforce_is_used_when_only_its_credentials_are_set(settings: Settings) -> None:
    assert isinstance(crm_from_settings(settings.model_copy(update=SALESFORCE)), SalesforceCRM)


def test_a_chosen_crm_without_credentials_fails_with_the_variables_to_set(settings: Settings) -> None:
    with pytest.raises(CrmConfigurationError, match="HUBSPOT_TOKEN"):
        crm_from_settings(settings.model_copy(update={"crm_backend": "hubspot"}))
    with pytest.raises(CrmConfigurationError, match="SALESFORCE_CLIENT_ID"):
        crm_from_settings(settings.model_copy(update={"crm_backend": "salesforce"}))


def test_each_site_can_use_its_own_crm(settings: Settings, tmp_path: Path) -> None:
    sites = tmp_path / "sites.toml"
    sites.write_text('[[site]]\nname = "main"\npoll = false\n\n[[site]]\nname = "west"\npoll = false\n'
                     'crm = "salesforce"\n')
    configured = settings.model_copy(
        update={"hubspot_token": SecretStr("pat-na1-test"), "sites_file": sites, **SALESFORCE}
    )

    services = build_services(configured)

    assert isinstance(services.crm_for("main"), HubSpotCRM)
    assert isinstance(services.crm_for("west"), SalesforceCRM)
    assert services.crm_for("unknown-site") is services.crm

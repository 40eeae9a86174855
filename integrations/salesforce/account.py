"""Read-only calls about the Salesforce org, for `admitflow doctor`: the token, and the Lead field our lead reference
is kept in. sObject Describe: GET /services/data/vXX.X/sobjects/Lead/describe answers `{"name", "fields": [{"name",
"type", "externalId", "unique", "createable", "updateable", ...}], ...}`
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_describe.htm).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from integrations.salesforce.client import SalesforceCRM


class LeadField(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str
    external_id: bool = Field(False, alias="externalId")
    unique: bool = False
    createable: bool = False
    updateable: bool = False


class _Describe(BaseModel):
    model_config = ConfigDict(extra="ignore")

    fields: list[LeadField] = Field(default_factory=list)


class SalesforceAccount(SalesforceCRM):
    """The CRM client's token flow and error mapping, with the read-only org checks."""

    def instance_url(self) -> str:
        """Log in (the configured flow) and return the org's instance URL."""
        return self._tokens.token().instance_url

    @property
    def external_id_field(self) -> str:
        return self._external_id_field

    def lead_field(self, name: str) -> LeadField | None:
        """How Lead's field `name` is defined, or None when Lead has no such field (for this user)."""
        describe = _Describe.model_validate(self.json("GET", f"{self._data}/sobjects/Lead/describe") or {})
        return next((field for field in describe.fields if field.name.lower() == name.lower()), None)

"""Read-only calls about the HubSpot account and the private-app token, for `admitflow doctor`.

Owners: https://developers.hubspot.com/docs/api/crm/owners (GET /crm/v3/owners, paged by `paging.next.after`).
The token's scopes: POST /oauth/v2/private-apps/get/access-token-info with `{"tokenKey": token}`, which answers
`{"userId", "hubId", "appId", "scopes": [...]}` (https://developers.hubspot.com/docs/api/private-apps, end of page).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from integrations.hubspot.client import HubSpotCRM

# Every call the worker makes, and GET /crm/v3/owners for `admitflow doctor`.
REQUIRED_SCOPES = ("crm.objects.contacts.read", "crm.objects.contacts.write")
OWNERS_SCOPE = "crm.objects.owners.read"
OWNERS_PAGE = 100


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class Owner(_Answer):
    id: str


class _Next(_Answer):
    after: str


class _Paging(_Answer):
    next: _Next | None = None


class OwnersPage(_Answer):
    results: list[Owner] = Field(default_factory=list)
    paging: _Paging | None = None


class TokenInfo(_Answer):
    hub_id: str | None = Field(None, alias="hubId")
    scopes: list[str] = Field(default_factory=list)


class HubSpotAccount(HubSpotCRM):
    """The CRM client's credentials and error mapping, with the read-only account checks."""

    def owner_ids(self) -> set[str]:
        """Every active owner's id: what roster `hubspot_owner_id` values must be."""
        found: set[str] = set()
        after: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": OWNERS_PAGE, **({"after": after} if after else {})}
            page = OwnersPage.model_validate(self.json("GET", "/crm/v3/owners", params=params) or {})
            found.update(owner.id for owner in page.results)
            if page.paging is None or page.paging.next is None:
                return found
            after = page.paging.next.after

    def token_info(self) -> TokenInfo:
        """The account and scopes the private-app token holds. The token goes in the body (as documented) and in
        the header (EU tokens need it there); both reach only HubSpot."""
        return TokenInfo.model_validate(
            self.json("POST", "/oauth/v2/private-apps/get/access-token-info", json={"tokenKey": self._token}) or {}
        )

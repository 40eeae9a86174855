"""Salesforce as the CRM: Leads keyed by our lead reference, Tasks for notes and callbacks."""

from __future__ import annotations

from integrations.salesforce.auth import AccessToken, ClientCredentialsFlow, JwtBearerFlow, TokenProvider
from integrations.salesforce.client import SalesforceCRM

__all__ = ["AccessToken", "ClientCredentialsFlow", "JwtBearerFlow", "SalesforceCRM", "TokenProvider"]

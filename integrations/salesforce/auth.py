"""Access tokens for the Salesforce REST API: the OAuth 2.0 client credentials and JWT bearer flows.

A token is fetched on first use and kept until Salesforce refuses it; the client then asks for one fresh token
(`refresh`) before giving up. Salesforce's token answer carries no lifetime, so there is nothing to schedule.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Protocol

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import ValidationError

from integrations.errors import ServiceUnavailable, Unauthorized
from integrations.http import HttpService
from integrations.salesforce.models import TokenAnswer, TokenError

OAUTH2_ENDPOINT = "/services/oauth2/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# "The expiration time of the assertion within 3 minutes" (JWT bearer flow, step "Construct a JSON Claims Set").
ASSERTION_LIFETIME_SECONDS = 180

# error_description values worth a specific fix; anything else gets the flow's general hint. The description is
# matched, never shown.
_KNOWN_REFUSALS = {
    "request not supported on this domain": (
        "the client credentials flow does not run on login.salesforce.com or test.salesforce.com: set "
        "SALESFORCE_LOGIN_URL to the org's My Domain URL (https://<domain>.my.salesforce.com)"
    ),
    "no client credentials user enabled": (
        "choose a Run As user for the client credentials flow in the connected app's policies"
    ),
    "audience validation failed": (
        "the assertion's audience is SALESFORCE_LOGIN_URL, which must be https://login.salesforce.com (or "
        "https://test.salesforce.com for a sandbox)"
    ),
    "user hasn't approved this consumer": (
        "pre-authorize SALESFORCE_USERNAME for the connected app (Admin approved users are pre-authorized, "
        "then add the user's profile or permission set)"
    ),
}


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    instance_url: str


class TokenProvider(Protocol):
    """Where `SalesforceCRM` gets its bearer token and the org's instance URL."""

    auth_hint: str

    def token(self) -> AccessToken:
        """The cached token, fetched on first use."""

    def refresh(self) -> AccessToken:
        """Forget the cached token and fetch a new one."""


class OAuthTokenProvider(HttpService):
    """Fetches a token from `{login_url}/services/oauth2/token` with a flow's form and caches it."""

    service = "Salesforce"
    flow = "OAuth"

    def __init__(self, login_url: str, *, timeout: float = 10.0, session: requests.Session | None = None) -> None:
        if not login_url.startswith("https://"):
            raise ValueError("SALESFORCE_LOGIN_URL must be an https:// URL, such as https://login.salesforce.com")
        super().__init__(login_url, timeout=timeout, session=session)
        self._cached: AccessToken | None = None

    def token(self) -> AccessToken:
        if self._cached is None:
            self._cached = self._fetch()
        return self._cached

    def refresh(self) -> AccessToken:
        self._cached = None
        return self.token()

    def grant(self) -> dict[str, str]:
        """The form fields that identify this flow and its credentials."""
        raise NotImplementedError

    def _fetch(self) -> AccessToken:
        payload = self.json("POST", OAUTH2_ENDPOINT, data=self.grant(), headers={"Accept": "application/json"})
        try:
            answer = TokenAnswer.model_validate(payload)
        except ValidationError:
            # Not chained: the pydantic error would quote the token.
            raise ServiceUnavailable(f"Salesforce answered POST {OAUTH2_ENDPOINT} with a body we could not read; "
                                     "will retry") from None
        return AccessToken(answer.access_token, answer.instance_url.rstrip("/"))

    def raise_for_response(self, response: requests.Response) -> None:
        """Refused credentials answer 400 (or 401) with `{"error", "error_description"}`; both are permanent.

        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm
        """
        status = response.status_code
        if status in (400, 401, 403):
            refusal = _token_error(response)
            code = refusal.error if refusal.error.replace("_", "").isalpha() else "no error code"
            fix = _KNOWN_REFUSALS.get(refusal.error_description.strip().lower(), self.auth_hint)
            raise Unauthorized(f"Salesforce refused the {self.flow} login ({status}, {code}): {fix}", status=status)
        super().raise_for_response(response)


class ClientCredentialsFlow(OAuthTokenProvider):
    """OAuth 2.0 client credentials flow: the connected app's key and secret act as its Run As user.

    https://developer.salesforce.com/docs/atlas.en-us.262.0.chatterapi.meta/chatterapi/quickstart_connecting.htm
    (grant_type=client_credentials, client_id, client_secret -> access_token, instance_url)
    """

    flow = "client credentials"
    auth_hint = (
        "check SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET (the connected app's consumer key and secret, with "
        "the client credentials flow enabled, a Run As user and the api scope) and set SALESFORCE_LOGIN_URL to the "
        "org's My Domain URL"
    )

    def __init__(
        self,
        login_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("the client credentials flow needs SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET")
        super().__init__(login_url, timeout=timeout, session=session)
        self._client_id = client_id
        self._client_secret = client_secret

    def grant(self) -> dict[str, str]:
        return {"grant_type": "client_credentials", "client_id": self._client_id, "client_secret": self._client_secret}


class JwtBearerFlow(OAuthTokenProvider):
    """OAuth 2.0 JWT bearer flow: an RS256 assertion signed with the key whose certificate the connected app holds.

    https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm (header {"alg":"RS256"};
    claims iss = consumer key, sub = username, aud = login URL, exp within 3 minutes; POST grant_type and assertion)
    """

    flow = "JWT bearer"
    auth_hint = (
        "check SALESFORCE_CLIENT_ID (the connected app's consumer key), SALESFORCE_USERNAME (a user pre-authorized "
        "for the app), SALESFORCE_PRIVATE_KEY_FILE (the key of the certificate uploaded to the app, which needs the "
        "api scope) and SALESFORCE_LOGIN_URL (https://login.salesforce.com, or https://test.salesforce.com for a "
        "sandbox)"
    )

    def __init__(
        self,
        login_url: str,
        client_id: str,
        username: str,
        private_key_pem: bytes,
        *,
        audience: str | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        if not client_id or not username:
            raise ValueError("the JWT bearer flow needs SALESFORCE_CLIENT_ID and SALESFORCE_USERNAME")
        super().__init__(login_url, timeout=timeout, session=session)
        self._client_id = client_id
        self._username = username
        self._audience = audience or self.base_url
        self._key = _rsa_private_key(private_key_pem)

    def grant(self) -> dict[str, str]:
        return {"grant_type": JWT_BEARER_GRANT, "assertion": self.assertion()}

    def assertion(self) -> str:
        claims = {
            "iss": self._client_id,
            "sub": self._username,
            "aud": self._audience,
            "exp": int(time.time()) + ASSERTION_LIFETIME_SECONDS,
        }
        signing_input = f"{_b64url_json({'alg': 'RS256'})}.{_b64url_json(claims)}"
        signature = self._key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


def _rsa_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        # Not chained: the parser's error can quote the key material.
        raise ValueError("SALESFORCE_PRIVATE_KEY_FILE must hold an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("SALESFORCE_PRIVATE_KEY_FILE must hold an RSA key: Salesforce signs JWTs with RS256")
    return key


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_json(value: dict[str, object]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _token_error(response: requests.Response) -> TokenError:
    try:
        return TokenError.model_validate(response.json())
    except ValueError:
        return TokenError()

"""Checking that a webhook really comes from Twilio, with the `twilio` package's own `RequestValidator`.

Twilio signs the full URL it requested plus the sorted POST parameters with the account's auth token
(HMAC-SHA1, header X-Twilio-Signature). Behind a proxy the URL the app sees is not the one Twilio called, so the
URL is rebuilt from the configured public address. https://www.twilio.com/docs/usage/webhooks/webhooks-security
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from twilio.request_validator import RequestValidator

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
# Present when a Webhook Rule signs with a SharedKey instead of the auth token. That API is not HIPAA-eligible.
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"


def public_url(base_url: str, path: str, query: str = "") -> str:
    """The URL Twilio called: the public base address, the route's path, and the query string exactly as sent."""
    return f"{base_url.rstrip('/')}{path}" + (f"?{query}" if query else "")


class TwilioSignatures:
    """Validates X-Twilio-Signature against the account's auth token."""

    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def is_valid(
        self, url: str, params: Mapping[str, str], signature: str | None, settings_header: str | None = None
    ) -> bool:
        if not signature:
            return False
        if settings_header:
            log.error("a Twilio webhook was signed with a Webhook Rule's shared key; admitflow checks signatures "
                      "with TWILIO_AUTH_TOKEN: remove the Webhook Rule for admitflow's URLs")
            return False
        return bool(self._validator.validate(url, dict(params), signature))

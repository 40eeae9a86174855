"""Staff SMS through Twilio's Messages API, with Twilio's error codes mapped to our error family.

Request: https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource
Error body ({code, message, more_info, status}): https://www.twilio.com/docs/usage/twilios-response
Codes: https://www.twilio.com/docs/api/errors
"""

from __future__ import annotations

from typing import Any

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from integrations.errors import IntegrationError, RateLimited, ServiceUnavailable, Unauthorized
from integrations.messaging import SentMessage

AUTHENTICATION_FAILED = 20003
TOO_MANY_REQUESTS = 20429
REGION_NOT_ENABLED = 21408
INVALID_TO_NUMBER = 21211
UNSUBSCRIBED_RECIPIENT = 21610
CANNOT_ROUTE = 21612
NOT_A_MOBILE_NUMBER = 21614
FROM_NOT_SMS_CAPABLE = 21606
FROM_NOT_TWILIO_NUMBER = 21659
TO_SAME_AS_FROM = 21266

# Each says what is wrong with the staff number and what the operator does about it.
_RECIPIENT_PROBLEMS: dict[int, str] = {
    INVALID_TO_NUMBER: "is not a valid phone number; fix the staff phone in ROSTER_FILE",
    NOT_A_MOBILE_NUMBER: "is not a mobile number; put a mobile number for the staff member in ROSTER_FILE",
    UNSUBSCRIBED_RECIPIENT: "replied STOP to the center's number; ask the staff member to text START to it",
    REGION_NOT_ENABLED: (
        "is in a country not enabled for SMS; enable it in Twilio's Messaging Geographic Permissions "
        "or fix the staff phone in ROSTER_FILE"
    ),
    CANNOT_ROUTE: "cannot receive SMS; put a mobile number for the staff member in ROSTER_FILE",
}
_SENDER_PROBLEMS: dict[int, str] = {
    FROM_NOT_SMS_CAPABLE: "is not an SMS-capable number on this Twilio account",
    FROM_NOT_TWILIO_NUMBER: "is not a Twilio number on this account",
    TO_SAME_AS_FROM: "is the same as the staff recipient's number",
}


class TwilioMessenger:
    """Sends staff alerts from the center's Twilio number with the official `twilio` client."""

    name = "Twilio SMS"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        *,
        api_base_url: str | None = None,
        timeout: float = 10.0,
        status_callback_url: str | None = None,
    ) -> None:
        self.from_number = from_number
        self.timeout = timeout
        self.status_callback_url = status_callback_url
        self.client: Any = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout))
        if api_base_url:
            self.client.api.base_url = api_base_url
            # TWILIO_EDGE / TWILIO_REGION would rewrite the host (and mangle a dotted IP like 127.0.0.1).
            self.client.edge = self.client.region = None

    def send_sms(self, to: str, body: str) -> SentMessage:
        """Send `body` to the E.164 number `to`; raises `IntegrationError` without the body or the number."""
        extra = {"status_callback": self.status_callback_url} if self.status_callback_url else {}
        try:
            message = self.client.messages.create(to=to, from_=self.from_number, body=body, **extra)
        except requests.Timeout:
            raise ServiceUnavailable(f"Twilio did not answer within {self.timeout:g}s; will retry") from None
        except requests.ConnectionError:
            raise ServiceUnavailable("could not connect to Twilio; will retry") from None
        # The exception's text holds Twilio's message, which quotes the To number: never chain it.
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _error_for(exc.code, exc.status, to) from None
        return SentMessage(sid=str(message.sid), status=str(message.status))


def _error_for(code: int | None, status: int, to: str) -> IntegrationError:
    if code == AUTHENTICATION_FAILED or status == 401:
        return Unauthorized(
            f"Twilio rejected the credentials ({code}): check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
            status=status,
        )
    if code == TOO_MANY_REQUESTS or status == 429:
        return RateLimited(f"Twilio is rate limiting SMS ({code}); will retry")
    if status >= 500:
        return ServiceUnavailable(f"Twilio answered {status}; will retry", status=status)
    if code in _RECIPIENT_PROBLEMS:
        problem = f"the staff number ending in {to[-2:]} {_RECIPIENT_PROBLEMS[code]}"
        return IntegrationError(f"Twilio {code}: {problem}", permanent=True, status=status)
    if code in _SENDER_PROBLEMS:
        return IntegrationError(
            f"Twilio {code}: TWILIO_FROM_NUMBER {_SENDER_PROBLEMS[code]}; fix TWILIO_FROM_NUMBER",
            permanent=True,
            status=status,
        )
    return IntegrationError(
        f"Twilio refused the SMS (HTTP {status}, error {code}): see https://www.twilio.com/docs/api/errors/{code}",
        permanent=True,
        status=status,
    )

"""Staff SMS and reminder calls through Twilio's REST API, with Twilio's error codes mapped to our error family.

Messages: https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource
Calls: https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource
Error body ({code, message, more_info, status}): https://www.twilio.com/docs/usage/twilios-response
Codes: https://www.twilio.com/docs/api/errors
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from integrations.errors import IntegrationError, RateLimited, ServiceUnavailable, Unauthorized
from integrations.messaging import SentMessage
from integrations.twilio.rate import SendRate

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
CALLER_ID_NOT_VERIFIED = 21210
INVALID_CALLER_ID = 21212
CALL_GEO_PERMISSION = 21215
CALL_BLOCKED = 21216
INVALID_CALL_NUMBER = 21217
INVALID_URL = 21205

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


_CALL_RECIPIENT_PROBLEMS: dict[int, str] = {
    INVALID_CALL_NUMBER: "is not a valid phone number; fix the staff phone in ROSTER_FILE",
    CALL_GEO_PERMISSION: (
        "is in a region not enabled for calls; enable it in Twilio's Voice Geographic Permissions "
        "or fix the staff phone in ROSTER_FILE"
    ),
    CALL_BLOCKED: "is on Twilio's blocklist for calls; put another number for the staff member in ROSTER_FILE",
}
_CALL_SENDER_PROBLEMS: dict[int, str] = {
    CALLER_ID_NOT_VERIFIED: "is not a verified caller id on this Twilio account",
    INVALID_CALLER_ID: "is not a valid caller id on this Twilio account",
}
# Twilio rings this long before it reports `no-answer` (its default is 60 s, when voicemail has long answered).
RING_SECONDS = 25
# How many of the latest texts to one staff phone are checked for one whose answer was lost: one page at Twilio's
# largest page size, enough for a long outage during a burst, when every alert goes to the one on-call phone.
RECENT_TEXTS = 1000
# The same for calls: the latest calls to one staff phone, one page at the largest page size.
RECENT_CALLS = 1000
# Twilio's clock and ours may differ by this much when a call's creation time is compared with our attempt's.
CLOCK_SKEW = timedelta(seconds=60)


class TwilioMessenger:
    """Sends staff alerts and places reminder calls from the center's Twilio number with the official client."""

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
        call_status_callback_url: str | None = None,
        sms_rate: SendRate | None = None,
    ) -> None:
        self.from_number = from_number
        self.sms_rate = sms_rate
        self.timeout = timeout
        self.status_callback_url = status_callback_url
        self.call_status_callback_url = call_status_callback_url
        self.client: Any = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout))
        if api_base_url:
            self.client.api.base_url = api_base_url
            # TWILIO_EDGE / TWILIO_REGION would rewrite the host (and mangle a dotted IP like 127.0.0.1).
            self.client.edge = self.client.region = None

    def send_sms(self, to: str, body: str) -> SentMessage:
        """Send `body` to the E.164 number `to`; raises `IntegrationError` without the body or the number."""
        extra = {"status_callback": self.status_callback_url} if self.status_callback_url else {}
        if self.sms_rate is not None:
            self.sms_rate.wait_for_slot()
        with self._errors(to, "SMS"):
            message = self.client.messages.create(to=to, from_=self.from_number, body=body, **extra)
        return SentMessage(sid=str(message.sid), status=str(message.status))

    def find_sms(self, to: str, body: str) -> SentMessage | None:
        """Look among the last texts from the center's number to `to` for one with `body` (a trial account prefixes
        bodies, hence `in`). https://www.twilio.com/docs/messaging/api/message-resource#read-multiple-message-resources
        (GET /Messages.json?To=&From=&PageSize=)"""
        with self._errors(to, "message lookup"):
            messages = self.client.messages.list(to=to, from_=self.from_number, limit=RECENT_TEXTS)
        found = next((message for message in messages if body in (message.body or "")), None)
        return SentMessage(sid=str(found.sid), status=str(found.status)) if found is not None else None

    def find_call(self, to: str, since: datetime, known: Collection[str]) -> SentMessage | None:
        """The earliest call from the center's number to `to` created since `since` (less clock skew) that is not
        in `known`. https://www.twilio.com/docs/voice/api/call-resource#read-multiple-call-resources
        (GET /Calls.json?To=&From=&PageSize=); a queued call has no StartTime yet, so the date is matched here."""
        since = (since if since.tzinfo else since.replace(tzinfo=UTC)) - CLOCK_SKEW
        with self._errors(to, "call lookup"):
            calls = self.client.calls.list(to=to, from_=self.from_number, limit=RECENT_CALLS)
        fresh = [call for call in calls if str(call.sid) not in known
                 and call.date_created is not None and call.date_created >= since]
        found = min(fresh, key=lambda call: call.date_created, default=None)
        return SentMessage(sid=str(found.sid), status=str(found.status)) if found is not None else None

    def place_call(self, to: str, twiml_url: str) -> SentMessage:
        """Call `to` from the center's number; Twilio fetches the TwiML from `twiml_url` when it is answered and
        reports the final status (completed, busy, no-answer, failed) to the call status callback.

        Answering machine detection runs before the TwiML is fetched, and its verdict (AnsweredBy: human,
        machine_start, fax, unknown) comes with that request and the status callback, so a reminder a voicemail
        took is not mistaken for one staff heard. https://www.twilio.com/docs/voice/answering-machine-detection"""
        extra = {"status_callback": self.call_status_callback_url} if self.call_status_callback_url else {}
        with self._errors(to, "call"):
            call = self.client.calls.create(
                to=to, from_=self.from_number, url=twiml_url, method="POST", timeout=RING_SECONDS,
                machine_detection="Enable", **extra,
            )
        return SentMessage(sid=str(call.sid), status=str(call.status))

    @contextmanager
    def _errors(self, to: str, what: str) -> Iterator[None]:
        """Twilio's failures as our errors. Never chained: Twilio's messages quote the To number, and a failed
        page (a plain TwilioException) quotes the whole answer."""
        try:
            yield
        except requests.Timeout:
            raise ServiceUnavailable(f"Twilio did not answer within {self.timeout:g}s; will retry") from None
        except requests.ConnectionError:
            raise ServiceUnavailable("could not connect to Twilio; will retry") from None
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _error_for(exc.code, exc.status, to, what=what) from None
        except TwilioException as exc:
            # A list that fails ("Unable to fetch page") carries Twilio's answer, not a status: a 429 on a lookup
            # is a rate limit like any other, not a failure that spends the retry budget.
            answer = next((arg for arg in exc.args if isinstance(getattr(arg, "status_code", None), int)), None)
            if answer is None:
                raise ServiceUnavailable(f"Twilio failed on the {what} without a usable answer; will retry") from None
            raise _error_for(_error_code(answer.text), answer.status_code, to, what=what) from None


def _error_code(body: Any) -> int | None:
    """Twilio's error code from an error answer's JSON body, if it has one."""
    try:
        code = json.loads(body).get("code")
    except (TypeError, ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def _error_for(code: int | None, status: int, to: str, what: str = "SMS") -> IntegrationError:
    if code == AUTHENTICATION_FAILED or status == 401:
        return Unauthorized(
            f"Twilio rejected the credentials ({code}): check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
            status=status,
        )
    if code == TOO_MANY_REQUESTS or status == 429:
        return RateLimited(f"Twilio is rate limiting {what}s ({code}); will retry")
    if status >= 500:
        return ServiceUnavailable(f"Twilio answered {status}; will retry", status=status)
    recipient_problems = _RECIPIENT_PROBLEMS if what == "SMS" else _CALL_RECIPIENT_PROBLEMS
    sender_problems = _SENDER_PROBLEMS if what == "SMS" else _CALL_SENDER_PROBLEMS
    if code in recipient_problems:
        problem = f"the staff number ending in {to[-2:]} {recipient_problems[code]}"
        return IntegrationError(f"Twilio {code}: {problem}", permanent=True, status=status)
    if code in sender_problems:
        return IntegrationError(
            f"Twilio {code}: TWILIO_FROM_NUMBER {sender_problems[code]}; fix TWILIO_FROM_NUMBER",
            permanent=True,
            status=status,
        )
    if code == INVALID_URL:
        return IntegrationError(
            f"Twilio {code}: the reminder's TwiML address is not a valid URL; fix ADMITFLOW_PUBLIC_URL",
            permanent=True,
            status=status,
        )
    return IntegrationError(
        f"Twilio refused the {what} (HTTP {status}, error {code}): see https://www.twilio.com/docs/api/errors/{code}",
        permanent=True,
        status=status,
    )

"""Read-only calls about the Twilio account and the center's number, for `admitflow doctor`.

Account: GET /2010-04-01/Accounts/{Sid}.json (`status`: active, suspended or closed; `type`: Trial or Full),
https://www.twilio.com/docs/iam/api/account. The number: GET /2010-04-01/Accounts/{Sid}/IncomingPhoneNumbers.json
?PhoneNumber=... (`capabilities` {voice, sms, mms, fax}, `sms_url`, `sms_method`, `voice_url`, `voice_method`,
`status_callback`, `status_callback_method`, and `trunk_sid` or `voice_application_sid`, either of which takes calls
instead of `voice_url`), https://www.twilio.com/docs/phone-numbers/api/incomingphonenumber-resource.
"""

from __future__ import annotations

from dataclasses import dataclass

from integrations.twilio.client import TwilioMessenger


@dataclass(frozen=True)
class AccountInfo:
    status: str
    type: str


@dataclass(frozen=True)
class NumberInfo:
    voice: bool
    sms: bool
    sms_url: str
    sms_method: str
    voice_url: str
    voice_method: str
    status_callback: str
    status_callback_method: str
    voice_routed_to: str  # the SIP trunk or TwiML app that takes calls instead of voice_url; "" when none does


class TwilioAccount(TwilioMessenger):
    """The messenger's client and error mapping, with the read-only account checks."""

    def account(self) -> AccountInfo:
        with self._errors(self.from_number, "account check"):
            account = self.client.api.v2010.accounts(self.client.account_sid).fetch()
        return AccountInfo(status=str(account.status or ""), type=str(account.type or ""))

    def center_number(self) -> NumberInfo | None:
        """TWILIO_FROM_NUMBER as this account holds it; None when the account has no such number."""
        with self._errors(self.from_number, "number check"):
            numbers = self.client.incoming_phone_numbers.list(phone_number=self.from_number, limit=1)
        if not numbers:
            return None
        number = numbers[0]
        # Twilio answers lowercase keys here ("sms"); other resources spell them "SMS".
        capabilities = {str(key).lower(): value for key, value in (number.capabilities or {}).items()}
        return NumberInfo(
            voice=bool(capabilities.get("voice")), sms=bool(capabilities.get("sms")),
            sms_url=str(number.sms_url or ""), sms_method=str(number.sms_method or ""),
            voice_url=str(number.voice_url or ""), voice_method=str(number.voice_method or ""),
            status_callback=str(number.status_callback or ""),
            status_callback_method=str(number.status_callback_method or ""),
            voice_routed_to=f"the SIP trunk {number.trunk_sid}" if number.trunk_sid else
            f"the TwiML app {number.voice_application_sid}" if number.voice_application_sid else "",
        )

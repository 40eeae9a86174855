"""Where Twilio reaches admitflow: the webhook paths, and their public URLs built from ADMITFLOW_PUBLIC_URL."""

from __future__ import annotations

from urllib.parse import urlencode

from config.settings import Settings
from integrations.twilio.webhooks import public_url

HOOKS = "/hooks/twilio"
SMS_PATH = f"{HOOKS}/sms"
MESSAGE_STATUS_PATH = f"{HOOKS}/status/message"
CALL_STATUS_PATH = f"{HOOKS}/status/call"
REMINDER_PATH = f"{HOOKS}/voice/reminder"
KEYPRESS_PATH = f"{HOOKS}/voice/keypress"
DIAL_STATUS_PATH = f"{HOOKS}/voice/dial-status"


def hook_url(settings: Settings, path: str, **params: int) -> str | None:
    """The public URL of one of admitflow's Twilio webhooks, or None when ADMITFLOW_PUBLIC_URL is not set."""
    if settings.public_url is None:
        return None
    return public_url(settings.public_url, path, urlencode(params))

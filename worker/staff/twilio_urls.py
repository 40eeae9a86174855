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
# The center's number itself (its voice webhooks in the Twilio console), and each step of an inbound call.
INBOUND_CALL_PATH = f"{HOOKS}/voice/inbound"
INBOUND_STATUS_PATH = f"{HOOKS}/voice/inbound/status"
WHISPER_PATH = f"{HOOKS}/voice/inbound/whisper"
WHISPER_KEY_PATH = f"{HOOKS}/voice/inbound/whisper-key"
RING_STATUS_PATH = f"{HOOKS}/voice/inbound/ring-status"
RECORDED_PATH = f"{HOOKS}/voice/inbound/recorded"
RECORDING_STATUS_PATH = f"{HOOKS}/voice/inbound/recording"
TRANSCRIPTION_PATH = f"{HOOKS}/voice/inbound/transcription"


def hook_url(settings: Settings, path: str, **params: int | str) -> str | None:
    """The public URL of one of admitflow's Twilio webhooks, or None when ADMITFLOW_PUBLIC_URL is not set."""
    if settings.public_url is None:
        return None
    return public_url(settings.public_url, path, urlencode(params))

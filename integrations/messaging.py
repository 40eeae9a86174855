"""What the worker needs to reach admissions staff, and a log-only messenger for running without credentials."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentMessage:
    """The provider's receipt for one outbound message or call."""

    sid: str
    status: str


class Messenger(Protocol):
    """Texts and calls staff from the center's number.

    Raises `integrations.errors.IntegrationError`; `permanent=True` means this recipient or message can never
    succeed (invalid number, recipient opted out), so the worker moves on instead of retrying.
    """

    name: str

    def send_sms(self, to: str, body: str) -> SentMessage:
        """Send `body` to the E.164 number `to`. The body must already be PHI-free."""

    def place_call(self, to: str, twiml_url: str) -> SentMessage:
        """Call the E.164 number `to`; when it is answered, the provider fetches what to do from `twiml_url`."""

    def find_sms(self, to: str, body: str) -> SentMessage | None:
        """The text with `body` recently sent to `to`, if the provider has one: whether an attempt whose answer
        was lost went out."""

    def find_call(self, to: str, since: datetime, known: Collection[str]) -> SentMessage | None:
        """The first call to `to` from the center's number created at or after `since` whose sid is not in `known`
        (the calls already recorded), if the provider has one: whether a call whose answer was lost was placed."""


class LogOnlyMessenger:
    """Stands in for Twilio when it is not configured: logs the PHI-free body and the staff recipient."""

    name = "log-only SMS"

    def send_sms(self, to: str, body: str) -> SentMessage:
        log.info("LOG-ONLY SMS (no TWILIO_* set) to staff %s: %s", to, body)
        return SentMessage(sid=f"log-{uuid.uuid4().hex[:16]}", status="logged")

    def place_call(self, to: str, twiml_url: str) -> SentMessage:
        log.info("LOG-ONLY CALL (no TWILIO_* set) to staff %s, playing %s", to, twiml_url)
        return SentMessage(sid=f"log-{uuid.uuid4().hex[:16]}", status="logged")

    def find_sms(self, to: str, body: str) -> SentMessage | None:
        return None

    def find_call(self, to: str, since: datetime, known: Collection[str]) -> SentMessage | None:
        return None

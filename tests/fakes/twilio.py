"""In-process stand-ins for talking to staff: a messenger that records texts and calls, and Twilio's signing."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response
from twilio.request_validator import RequestValidator

from integrations.errors import IntegrationError, ServiceUnavailable
from integrations.messaging import SentMessage

AUTH_TOKEN = "test-twilio-auth-token"
PUBLIC_URL = "https://admitflow.example.org"
CENTER_NUMBER = "+18555550100"


@dataclass
class RecordingMessenger:
    """Keeps every text and call; pops a failure from the front of `sms_failures` / `call_failures` first."""

    name: str = "recording"
    texts: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    sms_failures: list[IntegrationError] = field(default_factory=list)
    call_failures: list[IntegrationError] = field(default_factory=list)
    # The next this many texts and calls go out and then lose their answer (a timeout after Twilio took them).
    lost_sms_answers: int = 0
    lost_call_answers: int = 0

    def send_sms(self, to: str, body: str) -> SentMessage:
        if self.sms_failures:
            raise self.sms_failures.pop(0)
        self.texts.append((to, body))
        if self.lost_sms_answers:
            self.lost_sms_answers -= 1
            raise ServiceUnavailable("Twilio did not answer within 10s; will retry")
        return SentMessage(sid=f"SM{len(self.texts):032d}", status="queued")

    def find_sms(self, to: str, body: str) -> SentMessage | None:
        found = [n for n, text in enumerate(self.texts, start=1) if text == (to, body)]
        return SentMessage(sid=f"SM{found[-1]:032d}", status="delivered") if found else None

    def place_call(self, to: str, twiml_url: str) -> SentMessage:
        if self.call_failures:
            raise self.call_failures.pop(0)
        self.calls.append((to, twiml_url))
        if self.lost_call_answers:
            self.lost_call_answers -= 1
            raise ServiceUnavailable("Twilio did not answer within 10s; will retry")
        return SentMessage(sid=f"CA{len(self.calls):032d}", status="queued")

    def find_call(self, to: str, since: datetime, known: Collection[str]) -> SentMessage | None:
        sids = [f"CA{n:032d}" for n, call in enumerate(self.calls, start=1) if call[0] == to]
        fresh = [sid for sid in sids if sid not in known]
        return SentMessage(sid=fresh[0], status="completed") if fresh else None

    @property
    def text_recipients(self) -> list[str]:
        return [to for to, _ in self.texts]

    @property
    def call_recipients(self) -> list[str]:
        return [to for to, _ in self.calls]


def signed_post(client: TestClient, path_and_query: str, params: dict[str, str], **kwargs: Any) -> Response:
    """POST form `params` the way Twilio does, signed for the public URL with the package's own validator."""
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + path_and_query, params)
    headers = {"X-Twilio-Signature": signature, **kwargs.pop("headers", {})}
    return client.post(path_and_query, data=params, headers=headers, **kwargs)

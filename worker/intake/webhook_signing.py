"""Signed webhooks in the Standard Webhooks scheme, for senders that can sign.

The sender puts `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature` (space-separated
`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`) on each request; the secret is `whsec_<base64 key>`.
Spec: https://www.standardwebhooks.com/ and https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
A delivery's id is remembered for twice the tolerance, so the same signed request cannot be replayed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.store.db import session_scope
from worker.store.models import SeenWebhook

TOLERANCE = timedelta(minutes=5)
SECRET_PREFIX = "whsec_"  # noqa: S105 (the scheme's prefix, not a secret)


class SignatureRejected(ValueError):
    """The request is not a valid signed webhook; the message is safe to answer with (it reveals nothing)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret is 'whsec_' followed by base64")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a signing secret is 'whsec_' followed by base64") from None
    if len(key) < 16:
        raise ValueError("a signing secret's key must be at least 16 bytes")
    return key


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value a sender puts on `body` (also what tests and tools use)."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(signing_key(secret), content, hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class SignedDelivery:
    webhook_id: str
    timestamp: int


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: datetime) -> SignedDelivery:
    """Check the three headers against `body`; raises `SignatureRejected` with what to answer."""
    webhook_id = headers.get("webhook-id", "")
    raw_timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (webhook_id and raw_timestamp and signatures):
        raise SignatureRejected("missing webhook-id, webhook-timestamp or webhook-signature header")
    if len(webhook_id) > 255 or not webhook_id.isascii() or not webhook_id.isprintable():
        raise SignatureRejected("webhook-id is not a valid id", status=400)
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit() and len(raw_timestamp) <= 12):
        raise SignatureRejected("webhook-timestamp is not Unix seconds", status=400)
    timestamp = int(raw_timestamp)
    if abs(now.timestamp() - timestamp) > TOLERANCE.total_seconds():
        raise SignatureRejected("webhook-timestamp is outside the accepted window; check the sender's clock")
    expected = sign(secret, webhook_id, timestamp, body).encode()
    presented = [entry.encode() for entry in signatures.split(" ") if entry.startswith("v1,")]
    # Compare with every presented signature, so the time taken does not say which one was close.
    matches = [hmac.compare_digest(expected, candidate) for candidate in presented]
    if not any(matches):
        raise SignatureRejected("webhook-signature does not match")
    return SignedDelivery(webhook_id, timestamp)


def remember_delivery(session: Session, site: str, webhook_id: str, now: datetime) -> None:
    """Record the id (the unique constraint is the check) and forget ids no valid request can carry any more;
    raises `SignatureRejected` (409) for an id already seen. The caller commits."""
    session.execute(delete(SeenWebhook).where(SeenWebhook.seen_at < now - 2 * TOLERANCE))
    session.add(SeenWebhook(site=site, webhook_id=webhook_id, seen_at=now))
    try:
        session.flush()
    except IntegrityError:
        raise SignatureRejected("this webhook-id was already received", status=409) from None


def record_delivery(site: str, webhook_id: str, now: datetime) -> None:
    """`remember_delivery` in its own committed transaction (the web intake's use)."""
    with session_scope() as session:
        remember_delivery(session, site, webhook_id, now)

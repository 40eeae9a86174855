"""The audit trail: who or what read, exported, claimed, changed, purged, released, retried or dropped a lead.

Events are rows in `audit_events`, written in the caller's transaction so an audited act and its record commit
together, and the database refuses to update or delete them (migration 0004). They never hold PHI.
"""

from __future__ import annotations

import enum
import getpass
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.store.models import AuditEvent


class AuditAction(enum.StrEnum):
    READ = "read"
    EXPORT = "export"
    CLAIM = "claim"
    CHANGE = "change"
    PURGE = "purge"
    RELEASE = "release"
    RETRY = "retry"
    DROP = "drop"


class ActorKind(enum.StrEnum):
    OPERATOR = "operator"  # a person at the command line
    SYSTEM = "system"  # admitflow itself (retention, the web intake)
    STAFF = "staff"  # an admissions staff member on the roster


def operator_name() -> str:
    """Who is at the command line, as the operating system knows them."""
    try:
        return getpass.getuser()[:64]
    except (OSError, KeyError):
        return "unknown"


def record(
    session: Session,
    action: AuditAction,
    *,
    actor_kind: ActorKind,
    actor: str,
    lead_ref: str | None = None,
    submission_id: int | None = None,
    outbox_id: int | None = None,
    detail: str | None = None,
) -> AuditEvent:
    """Add one event to the caller's transaction. `detail` is a count, a state or a reason code, never PHI."""
    event = AuditEvent(
        actor_kind=actor_kind, actor=actor[:64], action=action, lead_ref=lead_ref, submission_id=submission_id,
        outbox_id=outbox_id, detail=detail[:255] if detail else None,
    )
    session.add(event)
    return event


def operator_did(
    session: Session,
    action: AuditAction,
    *,
    lead_ref: str | None = None,
    submission_id: int | None = None,
    outbox_id: int | None = None,
    detail: str | None = None,
) -> AuditEvent:
    """An operator's command, by the OS user running it."""
    return record(session, action, actor_kind=ActorKind.OPERATOR, actor=operator_name(), lead_ref=lead_ref,
                  submission_id=submission_id, outbox_id=outbox_id, detail=detail)


def events(session: Session, lead_ref: str | None = None, since: datetime | None = None) -> Sequence[AuditEvent]:
    """Events oldest first, for one lead and/or from a moment on."""
    query = select(AuditEvent).order_by(AuditEvent.at, AuditEvent.id)
    if lead_ref is not None:
        query = query.where(AuditEvent.lead_ref == lead_ref)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    return session.scalars(query).all()


def outbox_lead_ref(session: Session, outbox_id: int) -> str | None:
    """The reference of the lead an outbox row is for (audit events name leads by reference)."""
    from worker.store.models import Lead, OutboxMessage

    return session.scalar(select(Lead.ref).join(OutboxMessage, OutboxMessage.lead_id == Lead.id)
                          .where(OutboxMessage.id == outbox_id))

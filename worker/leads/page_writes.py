"""Writing what a page of submissions decided: its new leads, its outbox rows and its submissions, one statement
each, with SQLAlchemy Core rather than the ORM's unit of work (docs/architecture.md#processing-a-page).

On PostgreSQL each statement binds the page's rows as one JSON document (`json_to_recordset`), so its text is the
same for a page as for one entry (psycopg converts it once per process) and the values are serialized in C, not
adapted one by one; SQLite, in-process, takes the rows as an executemany. Columns a
statement does not name get their model defaults (`include_defaults` of `from_select`; per row on SQLite).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from worker.store.db import EncryptedJSON, EncryptedText, UTCDateTime, among, json_rows, utcnow
from worker.store.models import Lead, OutboxMessage, Submission, SubmissionState

_LEADS = cast(Table, Lead.__table__)
_OUTBOX = cast(Table, OutboxMessage.__table__)
_SUBMISSIONS = cast(Table, Submission.__table__)


@dataclass(slots=True)
class ClaimedSubmission:
    """A submission a page claimed, as processing reads and decides it: its stored columns, changed in memory and
    written back in one statement (`update_submissions`). The payload is PHI: never log."""

    id: int
    site: str
    form_id: str
    source: str
    payload: Any
    released: bool
    received_at: datetime
    state: str
    flag_reason: str | None
    processed_at: datetime | None
    is_repeat: bool
    device_index: str | None
    requested_at: datetime | None
    call_from: datetime | None
    match_evidence: Any
    lead_id: int | None
    lead: Lead | None = None  # the lead decided for it; its id (or its survivor's) is written


_CLAIMED_COLUMNS = [_SUBMISSIONS.c[name] for name in ClaimedSubmission.__dataclass_fields__ if name != "lead"]


def claim(session: Session, submission_ids: Collection[int]) -> list[ClaimedSubmission]:
    """Those of the submissions still `received`, stamped as processed now, by id (the payload decrypted). Another
    transaction processing one of them holds it until it commits; then it is no longer `received`, and not claimed.

    On PostgreSQL the rows are locked as they are read, found by id alone (those already processed are locked too,
    and left out here): asked for `state = 'received'` as well, PostgreSQL may read the partial index of waiting
    submissions instead, which statistics taken while few waited call small, and scan the whole backlog for each
    page (a backfill's, or a broker outage's), each page slower than the last. SQLite has no row locks: an UPDATE
    makes this transaction the database's one writer first."""
    now = utcnow()
    given = among(session, _SUBMISSIONS.c.id, submission_ids)
    if session.get_bind().dialect.name != "postgresql":
        session.execute(update(_SUBMISSIONS).where(given, _SUBMISSIONS.c.state == SubmissionState.RECEIVED)
                        .values(processed_at=now))
    rows = session.execute(select(*_CLAIMED_COLUMNS).where(given).order_by(_SUBMISSIONS.c.id).with_for_update())
    claimed = [ClaimedSubmission(**row._asdict()) for row in rows if row.state == SubmissionState.RECEIVED]
    for each in claimed:
        each.processed_at = now
    return claimed


_ENCRYPTED_TEXT, _ENCRYPTED_JSON, _UTC = EncryptedText(), EncryptedJSON(), UTCDateTime()


def _when(value: datetime | None, dialect: Dialect) -> str | None:
    utc = _UTC.process_bind_param(value, dialect)
    return None if utc is None else utc.isoformat()


# --- leads ----------------------------------------------------------------------------------------------------

_LEAD_COLUMNS = (
    column("ref", String), column("first_name", Text), column("last_name", Text), column("phone", Text),
    column("email", Text), column("phone_index", String), column("email_index", String),
    column("consent_to_text", Boolean), column("consent", Boolean), column("known_first_names", Text),
    column("priority", String), column("status", String), column("repeat_count", Integer),
    column("created_at", DateTime(timezone=True)), column("last_request_at", DateTime(timezone=True)),
)
_LEAD_NAMES = [each.name for each in _LEAD_COLUMNS]
_LEAD_PAGE = json_rows(*_LEAD_COLUMNS)
_INSERT_LEADS_ON_POSTGRES = (
    pg_insert(_LEADS)
    .from_select(_LEAD_NAMES, select(*(_LEAD_PAGE.c[name] for name in _LEAD_NAMES)))
    .returning(_LEADS.c.id, _LEADS.c.ref)
)
# Columns a new lead does not have yet: set on the object, so that reading them later costs no query.
UNSET_LEAD_COLUMNS = tuple(each.key for each in _LEADS.columns if each.key not in {"id", *_LEAD_NAMES})


def _lead_row(lead: Lead, dialect: Dialect) -> dict[str, Any]:
    encrypt, dump = _ENCRYPTED_TEXT.process_bind_param, _ENCRYPTED_JSON.process_bind_param
    return {
        "ref": lead.ref, "first_name": encrypt(lead.first_name, dialect), "last_name": encrypt(lead.last_name, dialect),
        "phone": encrypt(lead.phone, dialect), "email": encrypt(lead.email, dialect),
        "phone_index": lead.phone_index, "email_index": lead.email_index,
        "consent_to_text": lead.consent_to_text, "consent": lead.consent,
        "known_first_names": dump(lead.known_first_names, dialect), "priority": lead.priority,
        "status": lead.status, "repeat_count": lead.repeat_count,
        "created_at": _when(lead.created_at, dialect), "last_request_at": _when(lead.last_request_at, dialect),
    }


def insert_leads(session: Session, leads: Sequence[Lead]) -> None:
    """Insert new leads (not in the session) in one statement and set each one's id."""
    if not leads:
        return
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        rows = session.execute(_INSERT_LEADS_ON_POSTGRES, {"rows": [_lead_row(lead, dialect) for lead in leads]})
    else:
        rows = session.execute(
            _LEADS.insert().returning(_LEADS.c.id, _LEADS.c.ref, sort_by_parameter_order=True),
            [{name: getattr(lead, name) for name in _LEAD_NAMES} for lead in leads],
        )
    ids = {ref: lead_id for lead_id, ref in rows}
    for lead in leads:
        lead.id = ids[lead.ref]


# --- outbox ---------------------------------------------------------------------------------------------------

_OUTBOX_PAGE = json_rows(column("kind", String), column("lead_id", BigInteger), column("submission_id", BigInteger),
                          column("position", Integer))
# Sequence values are drawn in the SELECT's order, so the ids returned, sorted, are the rows' in the order given
# (what SQLAlchemy's own insertmanyvalues relies on for PostgreSQL).
_INSERT_OUTBOX_ON_POSTGRES = (
    pg_insert(_OUTBOX)
    .from_select(["kind", "lead_id", "submission_id"],
                 select(_OUTBOX_PAGE.c.kind, _OUTBOX_PAGE.c.lead_id, _OUTBOX_PAGE.c.submission_id)
                 .order_by(_OUTBOX_PAGE.c.position))
    .returning(_OUTBOX.c.id)
)


@dataclass(frozen=True, slots=True)
class NewOutboxRow:
    kind: str
    lead_id: int
    submission_id: int


def insert_outbox(session: Session, rows: Sequence[NewOutboxRow]) -> list[int]:
    """Insert pending outbox rows in one statement; their ids, in the order given."""
    if not rows:
        return []
    if session.get_bind().dialect.name == "postgresql":
        result = session.execute(_INSERT_OUTBOX_ON_POSTGRES, {"rows": [
            {"kind": row.kind, "lead_id": row.lead_id, "submission_id": row.submission_id, "position": position}
            for position, row in enumerate(rows)
        ]})
        return sorted(result.scalars())
    return list(session.execute(
        _OUTBOX.insert().returning(_OUTBOX.c.id, sort_by_parameter_order=True),
        [{"kind": row.kind, "lead_id": row.lead_id, "submission_id": row.submission_id} for row in rows],
    ).scalars())


# --- submissions ----------------------------------------------------------------------------------------------

_WRITTEN = ("state", "flag_reason", "processed_at", "is_repeat", "device_index", "requested_at", "call_from",
            "lead_id")
_SUBMISSION_PAGE = json_rows(
    column("id", BigInteger), column("state", String), column("flag_reason", String),
    column("processed_at", DateTime(timezone=True)), column("is_repeat", Boolean), column("device_index", String),
    column("requested_at", DateTime(timezone=True)), column("call_from", DateTime(timezone=True)),
    column("lead_id", BigInteger), column("match_evidence", JSON),
)
_UPDATE_SUBMISSIONS_ON_POSTGRES = (
    update(_SUBMISSIONS)
    .where(_SUBMISSIONS.c.id == _SUBMISSION_PAGE.c.id)
    .values({name: _SUBMISSION_PAGE.c[name] for name in (*_WRITTEN, "match_evidence")})
)
_UPDATE_SUBMISSIONS_ON_SQLITE = (
    update(_SUBMISSIONS)
    .where(_SUBMISSIONS.c.id == bindparam("submission_id"))
    .values(match_evidence=bindparam("evidence", type_=JSON(none_as_null=True)))
)


def update_submissions(session: Session, claimed: Sequence[ClaimedSubmission], lead_ids: Sequence[int | None]
                       ) -> None:
    """Write back what processing decided for each claimed submission (`lead_ids`: the lead of each, in order),
    in one statement; submission objects the session holds are expired, so they read it afresh."""
    if not claimed:
        return
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        session.execute(_UPDATE_SUBMISSIONS_ON_POSTGRES, {"rows": [
            {"id": each.id, "state": each.state, "flag_reason": each.flag_reason,
             "processed_at": _when(each.processed_at, dialect), "is_repeat": each.is_repeat,
             "device_index": each.device_index, "requested_at": _when(each.requested_at, dialect),
             "call_from": _when(each.call_from, dialect),
             "lead_id": lead_id, "match_evidence": each.match_evidence}
            for each, lead_id in zip(claimed, lead_ids, strict=True)
        ]})
    else:
        session.execute(_UPDATE_SUBMISSIONS_ON_SQLITE, [
            {"submission_id": each.id, "evidence": each.match_evidence, "lead_id": lead_id,
             **{name: getattr(each, name) for name in _WRITTEN if name != "lead_id"}}
            for each, lead_id in zip(claimed, lead_ids, strict=True)
        ])
    mapper = Submission.__mapper__
    for each in claimed:
        held = session.identity_map.get(mapper.identity_key_from_primary_key((each.id,)))
        if held is not None:
            session.expire(held)

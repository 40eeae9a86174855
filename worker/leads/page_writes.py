"""Writing what a page of submissions decided: its new leads, its outbox rows and its submissions, one statement
each, with SQLAlchemy Core rather than the ORM's unit of work (docs/architecture.md#processing-a-page).

On PostgreSQL each statement binds one array per column (`unnest`), so its text is the same for a page as for one
entry and psycopg converts it once per process; SQLite, in-process, takes the rows as an executemany. Columns a
statement does not name get their model defaults (`include_defaults` of `from_select`; per row on SQLite).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ARRAY, JSON, BigInteger, Boolean, Integer, String, Table, Text, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import Function
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

from worker.store.db import EncryptedJSON, EncryptedText, UTCDateTime
from worker.store.models import Lead, OutboxMessage, Submission

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
    match_evidence: Any
    lead_id: int | None
    lead: Lead | None = None  # the lead decided for it; its id (or its survivor's) is written


_CLAIMED_COLUMNS = [_SUBMISSIONS.c[name] for name in ClaimedSubmission.__dataclass_fields__ if name != "lead"]


def load_claimed(session: Session, submission_ids: Collection[int]) -> list[ClaimedSubmission]:
    """The claimed submissions, by id (the payload decrypted)."""
    rows = session.execute(select(*_CLAIMED_COLUMNS).where(_SUBMISSIONS.c.id.in_(submission_ids))
                           .order_by(_SUBMISSIONS.c.id))
    return [ClaimedSubmission(**row._asdict()) for row in rows]


def _arrays(columns: Sequence[tuple[str, TypeEngine[Any]]], ordinality: bool = False) -> TableValuedAlias:
    """`unnest(:a, :b, ...) AS page(a, b, ...)`, one typed array parameter per column."""
    unnest: Function[Any] = func.unnest(*(bindparam(name, type_=ARRAY(type_)) for name, type_ in columns))
    names = [name for name, _ in columns]
    return unnest.table_valued(*names, with_ordinality="position" if ordinality else None).render_derived()


# --- leads ----------------------------------------------------------------------------------------------------

_LEAD_COLUMNS: tuple[tuple[str, TypeEngine[Any]], ...] = (
    ("ref", String()), ("first_name", EncryptedText()), ("last_name", EncryptedText()), ("phone", EncryptedText()),
    ("email", EncryptedText()), ("phone_index", String()), ("email_index", String()),
    # A list: an array of them would be read as a second dimension, so it is bound already encrypted.
    ("consent_to_text", Boolean()), ("consent", Boolean()), ("known_first_names", Text()),
    ("priority", String()), ("status", String()), ("repeat_count", Integer()), ("created_at", UTCDateTime()),
    ("last_request_at", UTCDateTime()),
)
_LEAD_NAMES = [name for name, _ in _LEAD_COLUMNS]
_LEAD_PAGE = _arrays(_LEAD_COLUMNS)
_INSERT_LEADS_ON_POSTGRES = (
    pg_insert(_LEADS)
    .from_select(_LEAD_NAMES, select(*(_LEAD_PAGE.c[name] for name in _LEAD_NAMES)))
    .returning(_LEADS.c.id, _LEADS.c.ref)
)
_NAMES_TYPE = EncryptedJSON()
# Columns a new lead does not have yet: set on the object, so that reading them later costs no query.
UNSET_LEAD_COLUMNS = tuple(column.key for column in _LEADS.columns if column.key not in {"id", *_LEAD_NAMES})


def insert_leads(session: Session, leads: Sequence[Lead]) -> None:
    """Insert new leads (not in the session) in one statement and set each one's id."""
    if not leads:
        return
    if session.get_bind().dialect.name == "postgresql":
        dialect = session.get_bind().dialect
        rows = session.execute(_INSERT_LEADS_ON_POSTGRES, {
            **{name: [getattr(lead, name) for lead in leads] for name in _LEAD_NAMES},
            "known_first_names": [_NAMES_TYPE.process_bind_param(lead.known_first_names, dialect) for lead in leads],
        })
        ids = {ref: lead_id for lead_id, ref in rows}
    else:
        rows = session.execute(
            _LEADS.insert().returning(_LEADS.c.id, _LEADS.c.ref, sort_by_parameter_order=True),
            [{name: getattr(lead, name) for name in _LEAD_NAMES} for lead in leads],
        )
        ids = {ref: lead_id for lead_id, ref in rows}
    for lead in leads:
        lead.id = ids[lead.ref]


# --- outbox ---------------------------------------------------------------------------------------------------

_OUTBOX_COLUMNS: tuple[tuple[str, TypeEngine[Any]], ...] = (
    ("kind", String()), ("lead_id", BigInteger()), ("submission_id", BigInteger()),
)
_OUTBOX_PAGE = _arrays(_OUTBOX_COLUMNS, ordinality=True)
# Sequence values are drawn in the SELECT's order, so the ids returned, sorted, are the rows' in the order given
# (what SQLAlchemy's own insertmanyvalues relies on for PostgreSQL).
_INSERT_OUTBOX_ON_POSTGRES = (
    pg_insert(_OUTBOX)
    .from_select([name for name, _ in _OUTBOX_COLUMNS],
                 select(*(_OUTBOX_PAGE.c[name] for name, _ in _OUTBOX_COLUMNS)).order_by(_OUTBOX_PAGE.c.position))
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
        result = session.execute(_INSERT_OUTBOX_ON_POSTGRES, {
            "kind": [row.kind for row in rows],
            "lead_id": [row.lead_id for row in rows],
            "submission_id": [row.submission_id for row in rows],
        })
        return sorted(result.scalars())
    return list(session.execute(
        _OUTBOX.insert().returning(_OUTBOX.c.id, sort_by_parameter_order=True),
        [{"kind": row.kind, "lead_id": row.lead_id, "submission_id": row.submission_id} for row in rows],
    ).scalars())


# --- submissions ----------------------------------------------------------------------------------------------

_WRITTEN: tuple[tuple[str, TypeEngine[Any]], ...] = (
    ("state", String()), ("flag_reason", String()), ("processed_at", UTCDateTime()), ("is_repeat", Boolean()),
    ("device_index", String()), ("requested_at", UTCDateTime()), ("lead_id", BigInteger()),
)
_SUBMISSION_PAGE = _arrays((("submission_id", BigInteger()), *_WRITTEN, ("match_evidence", String())))
_UPDATE_SUBMISSIONS_ON_POSTGRES = (
    update(_SUBMISSIONS)
    .where(_SUBMISSIONS.c.id == _SUBMISSION_PAGE.c.submission_id)
    .values({
        **{name: _SUBMISSION_PAGE.c[name] for name, _ in _WRITTEN},
        "match_evidence": func.cast(_SUBMISSION_PAGE.c.match_evidence, JSON),
    })
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
    values: dict[str, list[Any]] = {name: [getattr(each, name) for each in claimed] for name, _ in _WRITTEN}
    values["lead_id"] = list(lead_ids)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_UPDATE_SUBMISSIONS_ON_POSTGRES, {
            **values,
            "submission_id": [each.id for each in claimed],
            "match_evidence": [None if each.match_evidence is None else json.dumps(each.match_evidence)
                               for each in claimed],
        })
    else:
        session.execute(_UPDATE_SUBMISSIONS_ON_SQLITE, [
            {"submission_id": each.id, "evidence": each.match_evidence,
             **{name: column[at] for name, column in values.items()}}
            for at, each in enumerate(claimed)
        ])
    mapper = Submission.__mapper__
    for each in claimed:
        held = session.identity_map.get(mapper.identity_key_from_primary_key((each.id,)))
        if held is not None:
            session.expire(held)

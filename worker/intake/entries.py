"""The single door every entry comes through, webhook, poll or CLI: store it once, durably."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import String, Table, Text, bindparam, column, exists, literal, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from integrations.gravityforms.exports import FormDocumentError, forms_in, pick_form
from integrations.gravityforms.models import EntryMeta, Form
from worker.intake.phone_entries import PhoneEntry
from worker.store.db import EncryptedJSON, UTCDateTime, json_rows, utcnow
from worker.store.models import FormDefinition, Submission, SubmissionSource, SubmissionState


class RejectedEntry(ValueError):
    """An entry that cannot be stored, with a message safe to return to the sender (no PHI)."""


@dataclass(frozen=True)
class StoredEntry:
    submission_id: int
    created: bool  # False: this entry was already stored (the webhook fired twice, or poll and push both saw it)


def entry_meta(entry: Any) -> EntryMeta:
    """Validate an entry's identity. Raises `RejectedEntry` with a precise, PHI-free message."""
    if not isinstance(entry, dict):
        raise RejectedEntry("body must be a JSON object: the Gravity Forms entry (Webhooks add-on, 'All Fields')")
    for key in ("id", "form_id"):
        if key not in entry:
            raise RejectedEntry(f"entry has no '{key}': configure the webhook's request body as 'All Fields'")
    try:
        return EntryMeta.model_validate(entry)
    except ValidationError as exc:
        bad = ", ".join(str(err["loc"][0]) for err in exc.errors() if err["loc"])
        raise RejectedEntry(f"entry field(s) {bad} must be Gravity Forms numeric ids") from None


# Calls and texts to the center's number: Twilio's ids, no Gravity Forms form.
PHONE_SOURCES = frozenset({SubmissionSource.CALL, SubmissionSource.SMS})


def phone_entry(entry: Any) -> PhoneEntry:
    """Validate a call's or text's entry (worker/intake/phone_entries.py). Raises `RejectedEntry`, without PHI."""
    try:
        return PhoneEntry.model_validate(entry)
    except ValidationError as exc:
        bad = ", ".join(str(err["loc"][0]) for err in exc.errors() if err["loc"]) or "id"
        raise RejectedEntry(f"phone entry field(s) {bad} are not a call's or a text's") from None


def _identity(entry: Any, source: SubmissionSource) -> tuple[str, str]:
    meta = phone_entry(entry) if source in PHONE_SOURCES else entry_meta(entry)
    return meta.form_id, meta.id


# Core statements on the table (the ORM's bulk-insert handling is not wanted here).
_TABLE = cast(Table, Submission.__table__)
_STORED = (_TABLE.c.form_id, _TABLE.c.entry_id, _TABLE.c.id)
# Built once (a webhook's request must not pay for building it): on PostgreSQL the page as one JSON document, so
# the statement's text is the same for a page as for one entry; stored in entry order.
_PAGE = json_rows(column("form_id", String), column("entry_id", String), column("payload", Text))
_ENCRYPTED_JSON = EncryptedJSON()
_STORE_ON_POSTGRES = (
    pg_insert(_TABLE)
    .from_select(
        ["site", "form_id", "entry_id", "source", "received_at", "payload", "state", "is_repeat"],
        select(
            bindparam("site", type_=String), _PAGE.c.form_id, _PAGE.c.entry_id, bindparam("source", type_=String),
            bindparam("received_at", type_=UTCDateTime), _PAGE.c.payload,
            literal(SubmissionState.RECEIVED.value, String), literal(False),
        ).order_by(_PAGE.c.form_id, _PAGE.c.entry_id),
    )
    .on_conflict_do_nothing()
    .returning(*_STORED)
)
# One entry (a webhook), or a page on SQLite: the plain statement; on PostgreSQL it skips the arrays' cost.
_STORE_ROW = {
    dialect: insert(_TABLE).values(state=SubmissionState.RECEIVED.value, is_repeat=False).on_conflict_do_nothing()
    .returning(*_STORED)
    for dialect, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


def store_entry(db: Session | Connection, *, site: str, entry: dict[str, Any], source: SubmissionSource) -> StoredEntry:
    """Insert the entry unless (site, form, entry id) is already stored. The caller commits before it answers."""
    return store_entries(db, site=site, entries=[entry], source=source)[0]


def store_entries(
    db: Session | Connection, *, site: str, entries: list[dict[str, Any]], source: SubmissionSource
) -> list[StoredEntry]:
    """`store_entry` for several entries in one statement (a page of history), in their order. An entry given
    twice is created once. Raises `RejectedEntry` for the first entry that is not one; the caller commits."""
    keys = [_identity(entry, source) for entry in entries]
    if not keys:
        return []
    values = {"site": site, "source": source.value, "received_at": utcnow()}
    dialect = (db.get_bind() if isinstance(db, Session) else db).dialect
    if dialect.name == "postgresql" and len(keys) > 1:
        encrypt = _ENCRYPTED_JSON.process_bind_param
        rows = db.execute(_STORE_ON_POSTGRES, {**values, "rows": [
            {"form_id": form_id, "entry_id": entry_id, "payload": encrypt(entry, dialect)}
            for (form_id, entry_id), entry in zip(keys, entries, strict=True)
        ]})
    else:
        rows = db.execute(_STORE_ROW[dialect.name], [
            {**values, "form_id": form_id, "entry_id": entry_id, "payload": entry}
            for (form_id, entry_id), entry in zip(keys, entries, strict=True)
        ])
    created = {(form_id, entry_id): submission_id for form_id, entry_id, submission_id in rows}
    stored = dict(created)
    missing = [key for key in keys if key not in stored]
    if missing:
        stored.update(
            ((form_id, entry_id), submission_id)
            for form_id, entry_id, submission_id in db.execute(
                select(*_STORED).where(
                    Submission.site == site, tuple_(Submission.form_id, Submission.entry_id).in_(missing)
                )
            )
        )
    result = []
    for key in keys:
        result.append(StoredEntry(stored[key], created=created.pop(key, None) is not None))
    return result


def register_form(session: Session, *, site: str, form_object: Any) -> tuple[FormDefinition, list[int]]:
    """Store or replace a form definition; returns it and the ids of submissions held for want of it."""
    try:
        form = Form.model_validate(form_object)
    except ValidationError:
        raise RejectedEntry(
            "not a Gravity Forms form object: expected JSON with 'id' and 'fields' as GET /wp-json/gf/v2/forms/{id} "
            "returns it"
        ) from None
    definition = session.scalar(
        select(FormDefinition).where(FormDefinition.site == site, FormDefinition.form_id == form.id)
    )
    if definition is None:
        definition = FormDefinition(site=site, form_id=form.id, title=form.title[:255], definition=form_object)
        session.add(definition)
    else:
        definition.title, definition.definition, definition.updated_at = form.title[:255], form_object, utcnow()
    held = session.scalars(
        select(Submission).where(
            Submission.site == site,
            Submission.form_id == form.id,
            Submission.state == SubmissionState.FLAGGED,
            Submission.flag_reason.like("unknown_form%"),
        )
    ).all()
    for submission in held:
        submission.state, submission.flag_reason = SubmissionState.RECEIVED, None
    session.flush()
    return definition, [submission.id for submission in held]


def register_forms(
    session: Session, *, site: str, document: Any, form_id: str | None = None
) -> list[tuple[FormDefinition, list[int]]]:
    """`register_form` for every form a file holds (a form object, an "Export Forms" file, a list of forms), or
    only the one with `form_id`. Raises `RejectedEntry` when it holds none, or not that one."""
    try:
        chosen = pick_form(forms_in(document), form_id)
    except FormDocumentError as exc:
        raise RejectedEntry(str(exc)) from None
    return [register_form(session, site=site, form_object=form) for form in chosen]


def form_registered(db: Session | Connection, site: str, form_id: str) -> bool:
    return bool(db.scalar(
        select(exists().where(FormDefinition.site == site, FormDefinition.form_id == form_id))
    ))


def known_form(session: Session, site: str, form_id: str) -> Form | None:
    definition = session.scalar(
        select(FormDefinition.definition).where(FormDefinition.site == site, FormDefinition.form_id == form_id)
    )
    return None if definition is None else Form.model_validate(definition)

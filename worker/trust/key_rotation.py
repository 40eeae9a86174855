"""Re-encrypting every PHI column with the newest key (`admitflow keys rotate`), in batches, resumably.

Put the new Fernet key first in ADMITFLOW_ENCRYPTION_KEYS and keep the old ones after it; run the rotation; once it
reports nothing left, the old keys can be removed. A rotation that stops half way is simply run again: values
already under the newest key are skipped.

Blind-index keys work the same way (ADMITFLOW_BLIND_INDEX_KEY, newest first): dedup looks digests up under every
configured key, and the rotation recomputes each stored digest from the decrypted value under the newest key and
deletes dedup lock rows that no stored digest refers to (those made under an old key among them; dedup makes a
lock row again when it needs one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    exists,
    or_,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

import worker.store.models  # noqa: F401  (registers every table on Base.metadata)
from integrations.gravityforms.models import EntryMeta
from worker.leads.processing import device_evidence
from worker.store.db import Base, EncryptedJSON, EncryptedText
from worker.store.models import Lead, LeadKey, Submission
from worker.store.phi import PhiVault


@dataclass
class Rotation:
    checked: int = 0  # encrypted values looked at
    rotated: int = 0  # of those, re-encrypted with the newest key


@dataclass
class IndexRotation:
    checked: int = 0  # stored digests looked at
    rewritten: int = 0  # of those, recomputed under the newest blind-index key
    stale_locks: int = 0  # dedup lock rows no stored digest refers to, deleted


def encrypted_columns() -> list[tuple[Table, list[str]]]:
    """Every table with PHI columns, found from the column types, so a new PHI column is never missed."""
    found = []
    for table in Base.metadata.sorted_tables:
        names = [column.name for column in table.columns if isinstance(column.type, EncryptedText | EncryptedJSON)]
        if names:
            found.append((table, names))
    return found


def rotate_keys(
    session: Session, vault: PhiVault, *, batch: int = 500, progress: Callable[[str, int], None] | None = None
) -> Rotation:
    """Re-encrypt every PHI value not under the newest key. Commits after each batch."""
    result = Rotation()
    for table, names in encrypted_columns():
        key = table.primary_key.columns.values()[0]
        raw = [type_coerce(table.c[name], Text).label(name) for name in names]
        last = None
        while True:
            query = select(key, *raw).order_by(key).limit(batch)
            if last is not None:
                query = query.where(key > last)
            rows = session.execute(query).all()
            if not rows:
                break
            for row in rows:
                changes = {}
                for name in names:
                    token = row._mapping[name]
                    if token is None:
                        continue
                    result.checked += 1
                    if not vault.is_current(token):
                        changes[name] = vault.rotate(token)
                if changes:
                    values = {name: bindparam(f"new_{name}", value, type_=Text) for name, value in changes.items()}
                    session.execute(update(table).where(key == row[0]).values(**values))
                    result.rotated += len(changes)
            session.commit()
            last = rows[-1][0]
            if progress:
                progress(table.name, len(rows))
    return result


Progress = Callable[[str, int], None]


def rotate_blind_indexes(
    session: Session, vault: PhiVault, *, batch: int = 500, progress: Progress | None = None
) -> IndexRotation:
    """Recompute every stored phone, email and device digest under the newest blind-index key, then delete the
    dedup lock rows no stored digest refers to. Commits after each batch; run again to resume."""
    result = IndexRotation()
    _rewrite_lead_digests(session, vault, batch, result, progress)
    _rewrite_device_digests(session, vault, batch, result, progress)
    _delete_stale_locks(session, batch, result, progress)
    return result


def _rewrite_lead_digests(
    session: Session, vault: PhiVault, batch: int, result: IndexRotation, progress: Progress | None
) -> None:
    columns: tuple[tuple[str, InstrumentedAttribute[str | None], InstrumentedAttribute[str | None]], ...] = (
        ("phone", Lead.phone, Lead.phone_index), ("email", Lead.email, Lead.email_index),
    )
    last = 0
    while rows := session.execute(
        select(Lead.id, Lead.phone, Lead.phone_index, Lead.email, Lead.email_index)
        .where(Lead.id > last, or_(Lead.phone_index.is_not(None), Lead.email_index.is_not(None)))
        .order_by(Lead.id).limit(batch)
    ).all():
        for row in rows:
            for kind, value_column, index_column in columns:
                value, stored = row._mapping[value_column], row._mapping[index_column]
                if stored is None:
                    continue  # a merged lead's digests were cleared: nothing to find it by
                result.checked += 1
                fresh = vault.blind_index(kind, value) if value else None
                if fresh != stored:
                    # Only if no dedup decision changed it meanwhile (a worker writes the newest key's digest too).
                    session.execute(
                        update(Lead).where(Lead.id == row.id, index_column == stored).values({index_column: fresh})
                    )
                    result.rewritten += 1
        session.commit()
        last = rows[-1].id
        if progress:
            progress("leads (blind indexes)", len(rows))


def _rewrite_device_digests(
    session: Session, vault: PhiVault, batch: int, result: IndexRotation, progress: Progress | None
) -> None:
    last = 0
    while rows := session.execute(
        select(Submission.id, Submission.payload, Submission.device_index)
        .where(Submission.id > last, Submission.device_index.is_not(None))
        .order_by(Submission.id).limit(batch)
    ).all():
        for row in rows:
            result.checked += 1
            # A purged entry no longer holds the IP and browser: its digest goes, the evidence is long stale.
            device = device_evidence(EntryMeta.model_validate(row.payload))
            fresh = vault.blind_index("device", device) if device else None
            if fresh != row.device_index:
                session.execute(
                    update(Submission)
                    .where(Submission.id == row.id, Submission.device_index == row.device_index)
                    .values(device_index=fresh)
                )
                result.rewritten += 1
        session.commit()
        last = rows[-1].id
        if progress:
            progress("submissions (blind indexes)", len(rows))


def _referenced(kind: str) -> ColumnElement[bool]:
    if kind == "device":
        return exists().where(Submission.device_index == LeadKey.digest)
    column = Lead.phone_index if kind == "phone" else Lead.email_index
    return exists().where(column == LeadKey.digest)


def _delete_stale_locks(session: Session, batch: int, result: IndexRotation, progress: Progress | None) -> None:
    stale = or_(*(and_(LeadKey.kind == kind, ~_referenced(kind)) for kind in ("phone", "email", "device")))
    last: tuple[str, str] = ("", "")
    while rows := session.execute(
        select(LeadKey.kind, LeadKey.digest)
        .where(tuple_(LeadKey.kind, LeadKey.digest) > tuple_(*last), stale)
        .order_by(LeadKey.kind, LeadKey.digest).limit(batch)
    ).all():
        keys = [(row.kind, row.digest) for row in rows]
        session.execute(delete(LeadKey).where(tuple_(LeadKey.kind, LeadKey.digest).in_(keys)))
        session.commit()
        result.stale_locks += len(keys)
        last = keys[-1]
        if progress:
            progress("lead_keys (dedup locks)", len(keys))

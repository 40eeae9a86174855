"""Re-encrypting every PHI column with the newest key (`admitflow keys rotate`), in batches, resumably.

Put the new Fernet key first in ADMITFLOW_ENCRYPTION_KEYS and keep the old ones after it; run the rotation; once it
reports nothing left, the old keys can be removed. A rotation that stops half way is simply run again: values
already under the newest key are skipped. The blind-index key is not rotated by this (that needs every digest
recomputed from the plaintext and is a different operation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Table, Text, bindparam, select, type_coerce, update
from sqlalchemy.orm import Session

import worker.models  # noqa: F401  (registers every table on Base.metadata)
from worker.db import Base, EncryptedJSON, EncryptedText
from worker.phi import PhiVault


@dataclass
class Rotation:
    checked: int = 0  # encrypted values looked at
    rotated: int = 0  # of those, re-encrypted with the newest key


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

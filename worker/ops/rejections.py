"""Refused webhooks: counted by door, status and reason, and logged one line each with nothing from the request.

Counts are kept in memory and added to the database every couple of seconds: a flood of refused requests must not
become a flood of database writes taking the connections real webhooks need. /metrics reads the totals from the
database, as it does every other figure, whichever web process refused them. Past a few lines between two writes,
refusals are summed up in one line instead of logged each.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from sqlalchemy.exc import SQLAlchemyError

from worker.store.db import session_scope, upsert, utcnow
from worker.store.models import WebhookRejection

log = logging.getLogger(__name__)

FLUSH_SECONDS = 2.0
LOG_LINES_PER_FLUSH = 20

Key = tuple[str, int, str]  # door, status, reason


class Rejections:
    """One per web process: `refused()` from any request thread, `flush()` from the app's background loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Counter[Key] = Counter()
        self._logged = 0
        self._unlogged = 0

    def refused(self, door: str, status: int, reason: str, detail: str) -> None:
        """Count one refused webhook. `detail` is the answer's message: ours, never what the sender wrote."""
        with self._lock:
            self._pending[(door, status, reason)] += 1
            quiet = self._logged >= LOG_LINES_PER_FLUSH
            self._unlogged += quiet
            self._logged += not quiet
        if not quiet:
            log.warning("refused a %s webhook: %d %s (%s)", door, status, reason, detail)

    def flush(self) -> None:
        """Add the counts since the last flush to the database; on failure they are kept for the next one."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            unlogged, self._logged, self._unlogged = self._unlogged, 0, 0
        if unlogged:
            log.warning("refused %d more webhooks without a line each (admitflow_webhooks_rejected_total counts them)",
                        unlogged)
        if not pending:
            return
        now = utcnow()
        try:
            with session_scope() as session:
                for (door, status, reason), count in sorted(pending.items()):
                    upsert(session, WebhookRejection,
                           {"door": door, "status": status, "reason": reason, "count": count, "last_at": now},
                           {"count": WebhookRejection.count + count, "last_at": now})
        except SQLAlchemyError as exc:
            log.warning("could not record refused webhook counts (%s); keeping them for the next try",
                        type(exc).__name__)
            with self._lock:
                self._pending.update(pending)

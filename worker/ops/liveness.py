"""Is beat alive, and are the workers running what it sends? Each run of a routine task (the heartbeat, the sweep,
a poll, the escalation check) leaves its time in a row, so a dead beat, or no worker to run what it sends, shows as
a row growing old. /healthz, `admitflow health beat`, `admitflow doctor` and /metrics read these rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.store.db import upsert
from worker.store.models import Heartbeat

HEARTBEAT = "heartbeat"
SWEEP = "sweep"
POLL = "poll"
ESCALATE = "escalate"


def record_run(session: Session, name: str, now: datetime, items: int = 0) -> None:
    """One more run of the routine task `name`, at `now`, having found `items` things to do."""
    upsert(session, Heartbeat, {"name": name, "at": now, "runs": 1, "items": items},
           {"at": now, "runs": Heartbeat.runs + 1, "items": Heartbeat.items + items})


def last_runs(session: Session) -> list[Heartbeat]:
    return list(session.scalars(select(Heartbeat).order_by(Heartbeat.name)))


def heartbeat_age(session: Session, now: datetime) -> float | None:
    """Seconds since beat's heartbeat last ran; None if it never has."""
    at = session.scalar(select(Heartbeat.at).where(Heartbeat.name == HEARTBEAT))
    return None if at is None else max(0.0, (now - at).total_seconds())

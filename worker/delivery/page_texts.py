"""A processed page's staff alerts, texted with a few statements for the whole page instead of a dozen per text.

The rule is the one a single row's `deliver` keeps (worker/delivery/outbox.py, worker/staff/alerts.py): each text's
attempt is committed as `sending`, with the row's lease, before the text goes out, and its outcome after, so a text
whose answer is lost is looked up at Twilio before it is sent again. Only the plain case is taken here: a new lead
that can be called back, no flood summary, no attempt left unanswered, a call time known. Every other row is left to
`deliver`, one at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar, cast

from sqlalchemy import Table, and_, bindparam, delete, exists, not_, or_, select, update
from sqlalchemy.orm import Session

from integrations.errors import IntegrationError
from integrations.messaging import SentMessage
from worker.delivery.outbox import CLEARED_ON_DELIVERY, LEASE, internal_error, record_failure
from worker.leads.processing import SOURCE_FLOOD, asked_call_time
from worker.staff.alerts import EscalationStart, alert_template, reachable, reminder_due, start_escalations
from worker.staff.services import Services
from worker.staff.templates import AlertFacts
from worker.store.db import utcnow
from worker.store.leases import OUTBOX, keeper
from worker.store.models import (
    Lead,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    StaffAlert,
    Submission,
)
from worker.store.unanswered import refused_before_writing

log = logging.getLogger(__name__)

T = TypeVar("T")

_outbox = cast(Table, OutboxMessage.__table__)
_alerts = cast(Table, StaffAlert.__table__)

# Built once, as every page runs them. The lease takes only the plain rows, decided in the same statement: whatever
# it leases is plain as of the lease, as a single row's delivery reads its lead after its lease.
_LEASE_PLAIN = (
    update(OutboxMessage)
    .where(
        OutboxMessage.id.in_(bindparam("ids", expanding=True)),
        OutboxMessage.kind == OutboxKind.STAFF_ALERT,
        OutboxMessage.state == OutboxState.PENDING,
        OutboxMessage.next_attempt_at <= bindparam("now"),
        or_(OutboxMessage.leased_until.is_(None), OutboxMessage.leased_until < bindparam("now")),
        exists().where(Lead.id == OutboxMessage.lead_id, Lead.status == LeadStatus.NEW, reachable()),
        exists().where(
            Submission.id == OutboxMessage.submission_id,
            Submission.call_from.is_not(None),
            or_(Submission.flag_reason.is_(None), not_(Submission.flag_reason.startswith(SOURCE_FLOOD))),
        ),
        not_(exists().where(StaffAlert.outbox_id == OutboxMessage.id, StaffAlert.channel == "sms",
                            StaffAlert.status == "sending")),
    )
    .values(leased_until=bindparam("until"), attempts=OutboxMessage.attempts + 1)
    .returning(OutboxMessage.id)
    .execution_options(synchronize_session=False)
)
_FACTS = (
    select(OutboxMessage.id, OutboxMessage.lead_id, Lead.ref, Lead.repeat_count, Lead.created_at, Submission.source,
           Submission.is_repeat, Submission.call_from, Submission.requested_at, Submission.received_at)
    .join(Lead, Lead.id == OutboxMessage.lead_id)
    .join(Submission, Submission.id == OutboxMessage.submission_id)
    .where(OutboxMessage.id.in_(bindparam("ids", expanding=True)))
    .order_by(OutboxMessage.id)
)
_ATTEMPT = _alerts.insert()
_SENDING = and_(_alerts.c.outbox_id == bindparam("row"), _alerts.c.channel == "sms", _alerts.c.status == "sending")
_ANSWERED = update(_alerts).where(_SENDING).values(
    status=bindparam("new_status"), provider_id=bindparam("sid"), error=bindparam("why"))
_NOT_SENT = delete(_alerts).where(_SENDING)
_DELIVERED = update(_outbox).where(_outbox.c.id == bindparam("row")).values(
    state=OutboxState.DELIVERED, delivered_at=bindparam("at"), **CLEARED_ON_DELIVERY)
_GIVEN_BACK = update(_outbox).where(_outbox.c.id == bindparam("row")).values(leased_until=None)


@dataclass(frozen=True)
class _Text:
    outbox_id: int
    lead_id: int
    to: str
    body: str
    remind_at: datetime


@dataclass
class PageTexts:
    """What became of a page's rows: `left` were not taken here (not plain, or not leased) and are delivered one at
    a time; `late` were taken but not sent in time (their lease given back); `due_again`: failed, retried then."""

    delivered: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    due_again: list[tuple[int, timedelta]] = field(default_factory=list)


def text_page(session: Session, outbox_ids: Sequence[int], services: Services, now: datetime, *, senders: int,
              until: float) -> PageTexts:
    """Text staff about the plain alerts among `outbox_ids`, up to `senders` at once; a text not started by
    `until` (a `time.monotonic()`) is not sent. Three statements and a commit before the texts, three and a commit
    after, whatever the page's size."""
    outcome = PageTexts()
    leased = set(session.scalars(_LEASE_PLAIN, {"ids": list(outbox_ids), "now": now, "until": now + LEASE}))
    outcome.left = [outbox_id for outbox_id in outbox_ids if outbox_id not in leased]
    if not leased:
        session.rollback()
        return outcome
    staff = services.roster.on_call_staff(now)[0]
    texts = _compose(session, sorted(leased), staff.phone, services, now)
    session.execute(_ATTEMPT, [
        {"lead_id": text.lead_id, "outbox_id": text.outbox_id, "staff_name": staff.name, "staff_phone": text.to,
         "channel": "sms", "body": text.body, "status": "sending", "created_at": now} for text in texts])
    session.commit()
    keeper.hold(OUTBOX, leased)
    try:
        answers, late = _send_all(texts, services, senders, until)
        _record(session, texts, answers, late)
    finally:
        keeper.release(OUTBOX, leased)
    for text in texts:
        answer = answers.get(text.outbox_id)
        if isinstance(answer, SentMessage):
            outcome.delivered.append(text.outbox_id)
        elif isinstance(answer, IntegrationError):
            failed = record_failure(session, text.outbox_id, answer, services.settings, now)
            if failed.retry_in is not None:
                outcome.due_again.append((text.outbox_id, failed.retry_in))
    outcome.late = [text.outbox_id for text in texts if text.outbox_id in late]
    return outcome


def _compose(session: Session, outbox_ids: list[int], to: str, services: Services, now: datetime) -> list[_Text]:
    texts = []
    for row in session.execute(_FACTS, {"ids": outbox_ids}):
        facts = AlertFacts(ref=row.ref, repeat_count=row.repeat_count, requested_at=row.created_at, now=now,
                           timezone=services.roster.timezone)
        body = services.templates.render(alert_template(services, row.source, row.is_repeat, reachable=True), facts)
        call_at = asked_call_time(row.call_from, row.requested_at or row.received_at)
        texts.append(_Text(row.id, row.lead_id, to, body, reminder_due(services, call_at, now)))
    return texts


def _send_all(texts: list[_Text], services: Services, senders: int,
              until: float) -> tuple[dict[int, SentMessage | IntegrationError], set[int]]:
    """Each text sent from one of `senders` threads; none of them touches the database."""
    answers: dict[int, SentMessage | IntegrationError] = {}

    def send(text: _Text) -> None:
        answer: SentMessage | IntegrationError
        try:
            answer = services.messenger.send_sms(text.to, text.body)
        except IntegrationError as exc:
            answer = exc
        except Exception as exc:  # our bug, or the library's: the text may have gone out, so it stays in doubt
            answer = internal_error(exc, f"staff alert {text.outbox_id}")
        answers[text.outbox_id] = answer

    late = side_by_side(texts, send, senders, until)
    return answers, {text.outbox_id for text in late}


def side_by_side(items: Sequence[T], work: Callable[[T], None], threads: int, until: float) -> list[T]:
    """Run `work` on each item, taken in order by up to `threads` threads; returns the items not started by `until`
    (a `time.monotonic()`)."""
    waiting = deque(items)
    late: list[T] = []
    lock = threading.Lock()

    def take_next() -> None:
        while True:
            with lock:
                if not waiting:
                    return
                if time.monotonic() > until:
                    late.extend(waiting)
                    waiting.clear()
                    return
                item = waiting.popleft()
            work(item)

    count = min(threads, len(items))
    if count <= 1:
        take_next()
    else:
        with ThreadPoolExecutor(count, thread_name_prefix="admitflow-text") as pool:
            for worker in [pool.submit(take_next) for _ in range(count)]:
                worker.result()
    return late


def _record(session: Session, texts: list[_Text], answers: dict[int, SentMessage | IntegrationError],
            late: set[int]) -> None:
    """The page's outcomes in one commit: each attempt's answer, the escalation timers of the texts that went out
    (due now for a text that can never arrive), the rows delivered, and the texts never sent taken back."""
    answered, starts, delivered = [], [], []
    now = utcnow()  # when the answers are in
    for text in texts:
        answer = answers.get(text.outbox_id)
        if isinstance(answer, SentMessage):
            answered.append({"row": text.outbox_id, "new_status": answer.status, "sid": answer.sid, "why": None})
            starts.append(EscalationStart(text.lead_id, text.outbox_id, text.remind_at, answer.sid))
            delivered.append({"row": text.outbox_id, "at": now})
        elif isinstance(answer, IntegrationError):
            # Refused, so certainly not sent; otherwise it stays `sending` until Twilio is asked.
            status = "failed" if refused_before_writing(answer) else "sending"
            answered.append({"row": text.outbox_id, "new_status": status, "sid": None, "why": answer.message})
            if answer.permanent:  # this text can never arrive (an opted-out or invalid staff phone): call now
                starts.append(EscalationStart(text.lead_id, text.outbox_id, now, None))
    if answered:
        session.execute(_ANSWERED, answered)
    start_escalations(session, starts, now)
    if delivered:
        session.execute(_DELIVERED, delivered)
    if late:
        session.execute(_NOT_SENT, [{"row": outbox_id} for outbox_id in sorted(late)])
        session.execute(_GIVEN_BACK, [{"row": outbox_id} for outbox_id in sorted(late)])
    session.commit()

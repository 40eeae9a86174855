"""Prometheus metrics, read from the database at scrape time.

Workers, beat and the web app are separate processes (separate containers under compose); the database records
every submission, outbox attempt, alert and claim, so it is the one place that knows the totals. Counting in each
process would need prometheus-client's multiprocess mode and a directory shared by every container. Labels are
sources, states, kinds and outcomes: never a lead reference, a name or a phone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from config.settings import Settings
from worker.ops.channels import callback_seconds, calls_by_outcome
from worker.ops.liveness import HEARTBEAT, last_runs
from worker.ops.reports import unclaimed_leads_query
from worker.store.db import session_scope, utcnow
from worker.store.models import (
    Claim,
    Lead,
    OutboxMessage,
    OutboxState,
    PollCursor,
    StaffAlert,
    Submission,
    WebhookRejection,
)

log = logging.getLogger(__name__)

# Seconds: speed to lead is judged in minutes, with a long tail into hours overnight.
SPEED_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0)


def _histogram(name: str, documentation: str, seconds: Iterable[float]) -> HistogramMetricFamily:
    counts = [0] * (len(SPEED_BUCKETS) + 1)
    total, observed = 0.0, 0
    for value in seconds:
        observed += 1
        total += value
        for index, bound in enumerate(SPEED_BUCKETS):
            if value <= bound:
                counts[index] += 1
                break
        else:
            counts[-1] += 1
    cumulative: list[tuple[str, float]] = []
    running = 0
    for label, count in zip([*(str(b) for b in SPEED_BUCKETS), "+Inf"], counts, strict=True):
        running += count
        cumulative.append((label, float(running)))
    return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=total)


def _seconds_between(pairs: Iterable[tuple[datetime | None, datetime | None]]) -> Iterator[float]:
    for start, end in pairs:
        if start is not None and end is not None:
            yield max(0.0, (end - start).total_seconds())


def database_metrics(session: Session) -> list[Metric]:
    """Every database-derived metric, read in one session."""
    received = CounterMetricFamily("admitflow_submissions_received", "Form entries stored, by the door they came in",
                                   labels=["source"])
    for source, count in session.execute(select(Submission.source, func.count()).group_by(Submission.source)):
        received.add_metric([source], count)
    by_state = GaugeMetricFamily("admitflow_submissions", "Form entries by state (processed, flagged, spam, received)",
                                 labels=["state"])
    for state, count in session.execute(select(Submission.state, func.count()).group_by(Submission.state)):
        by_state.add_metric([state], count)

    # One attempt per increment of `attempts`: the last one delivered or killed the row, the others were retries.
    finished = case((OutboxMessage.state.in_([OutboxState.DELIVERED, OutboxState.DEAD]), 1), else_=0)
    attempts = CounterMetricFamily(
        "admitflow_outbox_attempts", "CRM and Twilio deliveries by outbox kind and outcome (delivered, retry, dead)",
        labels=["kind", "outcome"],
    )
    backlog = GaugeMetricFamily("admitflow_outbox_rows", "Outbox rows by kind and state", labels=["kind", "state"])
    dead_total = 0
    retries: dict[str, int] = {}
    rows = select(OutboxMessage.kind, OutboxMessage.state, func.count(), func.sum(OutboxMessage.attempts - finished))
    for kind, state, count, failed in session.execute(rows.group_by(OutboxMessage.kind, OutboxMessage.state)):
        backlog.add_metric([kind, state], count)
        if state in (OutboxState.DELIVERED, OutboxState.DEAD):
            attempts.add_metric([kind, state], count)
        retries[kind] = retries.get(kind, 0) + max(0, int(failed or 0))
        dead_total += count if state == OutboxState.DEAD else 0
    for kind, count in retries.items():
        attempts.add_metric([kind, "retry"], count)
    dead = GaugeMetricFamily("admitflow_dead_letters", "Outbox rows given up on: `admitflow outbox list --state dead`",
                             value=dead_total)

    alerts = CounterMetricFamily("admitflow_staff_alerts", "Texts and calls to staff by channel and Twilio status",
                                 labels=["channel", "status"])
    for channel, status, count in session.execute(
        select(StaffAlert.channel, StaffAlert.status, func.count()).group_by(StaffAlert.channel, StaffAlert.status)
    ):
        alerts.add_metric([channel, status], count)

    first_request = (
        select(Submission.lead_id, func.min(func.coalesce(Submission.requested_at, Submission.received_at)).label("at"))
        .group_by(Submission.lead_id).subquery()
    )
    first_alert = select(StaffAlert.lead_id, func.min(StaffAlert.created_at).label("at")).group_by(
        StaffAlert.lead_id).subquery()
    alert_pairs = session.execute(
        select(first_request.c.at, first_alert.c.at).join(first_alert, first_alert.c.lead_id == first_request.c.lead_id)
    )
    to_alert = _histogram("admitflow_time_to_alert_seconds",
                          "From the person's submission to the first text or call to staff",
                          _seconds_between(alert_pairs.all()))
    to_claim = _histogram("admitflow_time_to_claim_seconds", "From the person's submission to a staff member's claim",
                          _seconds_between(session.execute(select(Claim.submitted_at, Claim.claimed_at)).all()))

    unclaimed = session.scalar(select(func.count()).select_from(unclaimed_leads_query().subquery())) or 0
    leads = GaugeMetricFamily("admitflow_unclaimed_leads", "Leads staff were alerted about that nobody has claimed",
                              value=unclaimed)
    known = GaugeMetricFamily("admitflow_leads", "Leads by status", labels=["status"])
    for status, count in session.execute(select(Lead.status, func.count()).group_by(Lead.status)):
        known.add_metric([status], count)
    return [received, by_state, attempts, backlog, dead, alerts, to_alert, to_claim, leads, known,
            *liveness_metrics(session, utcnow()), *phone_line_metrics(session)]


def liveness_metrics(session: Session, now: datetime) -> list[Metric]:
    """Beat's heartbeat, the routine tasks' runs, each polled form's health, and refused webhooks by reason."""
    runs = CounterMetricFamily("admitflow_routine_runs", "Runs of the tasks beat schedules (heartbeat, sweep, poll, "
                               "escalate), counted when a worker finished one", labels=["task"])
    found = CounterMetricFamily("admitflow_routine_items", "What those runs found: rows the sweep re-sent, entries "
                                "polling stored, escalation timers taken", labels=["task"])
    age = GaugeMetricFamily("admitflow_routine_last_run_age_seconds", "Seconds since each routine task last ran",
                            labels=["task"])
    metrics: list[Metric] = [runs, found, age]
    for row in last_runs(session):
        seconds = max(0.0, (now - row.at).total_seconds())
        runs.add_metric([row.name], row.runs)
        found.add_metric([row.name], row.items)
        age.add_metric([row.name], seconds)
        if row.name == HEARTBEAT:
            metrics.append(GaugeMetricFamily(
                "admitflow_beat_heartbeat_age_seconds",
                "Seconds since beat's heartbeat ran: beat, the broker and a worker all work while it stays low",
                value=seconds))
    failing = GaugeMetricFamily("admitflow_poll_consecutive_failures", "Failed polls in a row, per polled form",
                                labels=["site", "form"])
    success = GaugeMetricFamily("admitflow_poll_last_success_age_seconds",
                                "Seconds since each polled form was last read successfully", labels=["site", "form"])
    for cursor in session.scalars(select(PollCursor)):
        failing.add_metric([cursor.site, cursor.form_id], cursor.consecutive_failures)
        if cursor.last_success_at is not None:
            success.add_metric([cursor.site, cursor.form_id], max(0.0, (now - cursor.last_success_at).total_seconds()))
    rejected = CounterMetricFamily("admitflow_webhooks_rejected", "Webhooks refused, by door, status and reason",
                                   labels=["door", "status", "reason"])
    for rejection in session.scalars(select(WebhookRejection)):
        rejected.add_metric([rejection.door, str(rejection.status), rejection.reason], rejection.count)
    return [*metrics, failing, success, rejected]


def phone_line_metrics(session: Session) -> list[Metric]:
    """Calls to the center's number by outcome, voicemails, and how long a missed caller waits for the call back."""
    outcomes, voicemails = calls_by_outcome(session)
    calls = CounterMetricFamily(
        "admitflow_inbound_calls",
        "Calls to the center's number by outcome (answered live, missed, abandoned, after_hours, not_rung)",
        labels=["outcome"])
    for outcome, count in outcomes.items():
        calls.add_metric([outcome], count)
    left = CounterMetricFamily("admitflow_voicemails", "Voicemails left on the center's number", value=voicemails)
    to_callback = _histogram("admitflow_missed_call_to_callback_seconds",
                             "From a call nobody took to the bridged call back that reached the caller",
                             callback_seconds(session))
    return [calls, left, to_callback]


def queue_depth(broker_url: str) -> int | None:
    """Messages waiting in the Celery work queues (Redis lists: new work and the CRM's); None without a Redis broker
    or when unreachable."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    from config.celery_app import WORK_QUEUES

    try:
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=1, socket_timeout=1)
        return sum(int(client.llen(queue)) for queue in WORK_QUEUES)
    except redis.RedisError as exc:
        log.warning("metrics could not read the queue depth: Redis answered %s", type(exc).__name__)
        return None


class AdmitflowCollector(Collector):
    """Reads the database (and the broker's queue length) on every scrape."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        with session_scope() as session:
            yield from database_metrics(session)
        depth = queue_depth(self._settings.celery_broker_url)
        if depth is not None:
            yield GaugeMetricFamily("admitflow_queue_depth", "Tasks waiting in the Celery work queues (new work and "
                                    "the CRM's)", value=depth)


def metrics_router(settings: Settings) -> APIRouter:
    """GET /metrics in Prometheus' text format. Put it behind the same network policy as /healthz."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AdmitflowCollector(settings))
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router

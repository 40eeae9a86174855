"""Speed to lead: how fast the admissions team claims and calls back, from the claim records, overall and per
source (the campaign or site that brought the lead). Lead references, staff names and source labels only, never
PHI. `admitflow report speed` and the status page both render `speed_report()`; `admitflow report sources` renders
`source_report()`."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session

from config.settings import Settings
from worker.leads.processing import FormReader
from worker.staff.alerts import reachable
from worker.staff.escalation import CALL_FAILED, MESSAGE_FAILED
from worker.store.models import Claim, Lead, LeadStatus, OutboxKind, OutboxMessage, StaffAlert, Submission

UNDELIVERED_ALERT_STATUSES = MESSAGE_FAILED | CALL_FAILED


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (0.5: median, 0.9: p90); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Speed:
    """Median and 90th percentile, in seconds, of time-to-claim and time-to-call over `claims` claims."""

    claims: int
    claim_p50: float | None
    claim_p90: float | None
    calls: int
    call_p50: float | None
    call_p90: float | None


@dataclass(frozen=True)
class DaySpeed:
    day: date  # in the center's time zone, by when the person submitted
    speed: Speed


@dataclass(frozen=True)
class StaffSpeed:
    staff_name: str
    speed: Speed


@dataclass(frozen=True)
class UnclaimedLead:
    ref: str
    age: timedelta


@dataclass(frozen=True)
class SpeedReport:
    """Everything the admissions manager sees; times are seconds from the person's submission."""

    generated_at: datetime
    timezone: str
    days: list[DaySpeed]  # oldest first, one per day, days without claims included
    staff: list[StaffSpeed]  # fastest median first
    leads_today: int
    unclaimed: list[UnclaimedLead]  # oldest first
    alerts_sent: int
    alerts_undelivered: int


def speed_of(claims: list[Claim]) -> Speed:
    """Time to claim and to call over these claims."""
    to_claim = [(c.claimed_at - c.submitted_at).total_seconds() for c in claims]
    to_call = [(c.bridged_at - c.submitted_at).total_seconds() for c in claims if c.bridged_at is not None]
    return Speed(len(to_claim), percentile(to_claim, 0.5), percentile(to_claim, 0.9),
                 len(to_call), percentile(to_call, 0.5), percentile(to_call, 0.9))


def unclaimed_leads_query(since: datetime | None = None) -> Select[str, datetime]:
    """Leads staff were (or are being) told about that nobody has claimed: a backfilled lead too old to alert
    about is not waiting on anyone, nor is a call whose caller withheld their number (nothing to call back)."""
    alerted = exists().where(OutboxMessage.lead_id == Lead.id, OutboxMessage.kind == OutboxKind.STAFF_ALERT)
    query = select(Lead.ref, Lead.created_at).where(Lead.status == LeadStatus.NEW, alerted, reachable())
    if since is not None:
        query = query.where(Lead.created_at >= since)
    return query


def speed_report(session: Session, *, days: int, now: datetime, timezone: str) -> SpeedReport:
    """The last `days` days (today included) in `timezone`, per day and per staff member, and the state now."""
    zone = ZoneInfo(timezone)
    today = now.astimezone(zone).date()
    first_day = today - timedelta(days=days - 1)
    start = datetime.combine(first_day, time.min, zone)
    midnight = datetime.combine(today, time.min, zone)

    claims = list(session.scalars(select(Claim).where(Claim.submitted_at >= start, Claim.submitted_at <= now)))
    by_day: dict[date, list[Claim]] = defaultdict(list)
    by_staff: dict[str, list[Claim]] = defaultdict(list)
    for claim in claims:
        by_day[claim.submitted_at.astimezone(zone).date()].append(claim)
        by_staff[claim.staff_name].append(claim)
    day_rows = [DaySpeed(first_day + timedelta(days=n), speed_of(by_day[first_day + timedelta(days=n)]))
                for n in range(days)]
    staff_rows = sorted((StaffSpeed(name, speed_of(rows)) for name, rows in by_staff.items()),
                        key=lambda row: (row.speed.claim_p50 or 0.0, row.staff_name))

    leads_today = session.scalar(
        select(func.count()).select_from(Lead).where(Lead.created_at >= midnight, Lead.status != LeadStatus.MERGED)
    ) or 0
    unclaimed = [UnclaimedLead(ref, now - created)
                 for ref, created in session.execute(unclaimed_leads_query(start).order_by(Lead.created_at))]
    sent = session.scalar(select(func.count()).select_from(StaffAlert).where(StaffAlert.created_at >= start)) or 0
    undelivered = session.scalar(
        select(func.count()).select_from(StaffAlert).where(
            StaffAlert.created_at >= start, StaffAlert.status.in_(UNDELIVERED_ALERT_STATUSES)
        )
    ) or 0
    return SpeedReport(now, timezone, day_rows, staff_rows, leads_today, unclaimed, sent, undelivered)


def format_duration(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h14m`, or `-` for no value: short enough for a table cell."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned columns for a terminal: the first left, the others right."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) if index == 0 else cell.rjust(width)
                       for index, (cell, width) in enumerate(zip(line, widths, strict=True)))
             for line in [header, *rows]]
    return [line.rstrip() for line in lines]


def speed_cells(speed: Speed) -> list[str]:
    """A `Speed` as the cells of a table row (claims, claim p50, claim p90, calls, call p50, call p90)."""
    fd = format_duration
    return [str(speed.claims), fd(speed.claim_p50), fd(speed.claim_p90), str(speed.calls), fd(speed.call_p50),
            fd(speed.call_p90)]


def format_speed_report(report: SpeedReport) -> str:
    """The report as plain-text tables for a terminal."""
    columns = ["claims", "claim p50", "claim p90", "calls", "call p50", "call p90"]
    lines = [f"speed to lead, last {len(report.days)} days ({report.timezone}), from the person's submission",
             f"leads today {report.leads_today}, unclaimed now {len(report.unclaimed)}, "
             f"alerts sent {report.alerts_sent}, undelivered {report.alerts_undelivered}", ""]
    lines += text_table(["day", *columns], [[f"{d.day:%a %Y-%m-%d}", *speed_cells(d.speed)] for d in report.days])
    lines += ["", *text_table(["staff member", *columns],
                              [[s.staff_name, *speed_cells(s.speed)] for s in report.staff])]
    if report.unclaimed:
        lines += ["", *text_table(["unclaimed lead", "waiting"],
                                  [[u.ref, format_duration(u.age.total_seconds())] for u in report.unclaimed])]
    return "\n".join(lines)


@dataclass(frozen=True)
class SourceSpeed:
    """Leads a source brought in the period, how many were claimed, and how fast (seconds from the submission)."""

    source: str
    leads: int
    claimed: int
    claim_p50: float | None
    claim_p90: float | None


def source_label(attribution: dict[str, str]) -> str:
    """A lead's source as marketing names it: "utm_source / utm_medium", else the ad platform a click id names,
    else the referring site, else "(direct)"."""
    if source := attribution.get("utm_source", "").strip().lower():
        medium = attribution.get("utm_medium", "").strip().lower()
        return f"{source} / {medium}"[:60] if medium else source[:60]
    for key, label in (("gclid", "google / cpc (gclid)"), ("msclkid", "bing / cpc (msclkid)"),
                       ("fbclid", "facebook (fbclid)")):
        if attribution.get(key):
            return label
    host = urlsplit(attribution.get("referrer", "")).hostname
    return f"{host.removeprefix('www.')} / referral"[:60] if host else "(direct)"


def source_report(session: Session, settings: Settings, *, days: int, now: datetime) -> list[SourceSpeed]:
    """Leads created in the last `days` days by the source of the request that created each, most leads first."""
    start = datetime.combine((now.astimezone(ZoneInfo(settings.center_timezone)) - timedelta(days=days - 1)).date(),
                             time.min, ZoneInfo(settings.center_timezone))
    leads = dict(session.execute(
        select(Lead.id, Lead.created_at).where(Lead.created_at >= start, Lead.status != LeadStatus.MERGED)).all())
    first: dict[int, Submission] = {}
    for submission in session.scalars(select(Submission).where(Submission.lead_id.in_(leads))
                                      .order_by(Submission.requested_at, Submission.id)):
        first.setdefault(submission.lead_id or 0, submission)
    claims = {claim.lead_id: claim for claim in session.scalars(select(Claim).where(Claim.lead_id.in_(leads)))}
    forms = FormReader(session, settings)
    by_source: dict[str, list[int]] = defaultdict(list)
    for lead_id, submission in first.items():
        known = forms.form(submission.site, submission.form_id)
        payload = submission.payload if isinstance(submission.payload, dict) else {}
        attribution = known[1].attribution(payload) if known else {}
        by_source[source_label(attribution)].append(lead_id)
    rows = []
    for source, lead_ids in by_source.items():
        waits = [(claim.claimed_at - claim.submitted_at).total_seconds()
                 for lead_id in lead_ids if (claim := claims.get(lead_id)) is not None]
        rows.append(SourceSpeed(source, len(lead_ids), len(waits), percentile(waits, 0.5), percentile(waits, 0.9)))
    return sorted(rows, key=lambda row: (-row.leads, row.source))


def format_source_report(rows: list[SourceSpeed], days: int) -> str:
    lines = [f"leads and time to claim by source, last {days} days, from the person's submission", ""]
    cells = [[row.source, str(row.leads), str(row.claimed), format_duration(row.claim_p50),
              format_duration(row.claim_p90)] for row in rows]
    return "\n".join(lines + text_table(["source", "leads", "claimed", "claim p50", "claim p90"], cells))

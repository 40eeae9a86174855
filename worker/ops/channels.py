"""How people reach the center, by channel: the website's form, a call to the center's number, a text to it. For
each, how many leads and requests, and how fast admissions claims and calls back; for the phone line, how calls
went (answered live, missed, abandoned, after hours), how many left a voicemail, and how long a missed caller waits
for the call back. Counts, durations and channel names only, never PHI. `admitflow report channels` and the
status page render `channel_report()`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.ops.reports import Speed, format_duration, percentile, speed_cells, speed_of, text_table
from worker.store.models import CallOutcome, Claim, Lead, LeadStatus, PhoneCall, Submission, SubmissionSource

CHANNELS = ("form", "call", "text")
_CHANNEL_OF = {SubmissionSource.CALL.value: "call", SubmissionSource.SMS.value: "text"}
CALL_OUTCOMES = tuple(outcome.value for outcome in CallOutcome)


def channel_of(source: str) -> str:
    """form (webhook, poll, CLI, backfill), call or text."""
    return _CHANNEL_OF.get(source, "form")


@dataclass(frozen=True)
class ChannelFigures:
    channel: str
    leads: int  # people whose first request came this way
    requests: int  # requests this way, repeats included
    speed: Speed  # claims of those leads, from the person's first request


@dataclass(frozen=True)
class PhoneLine:
    """The center's number: inbound calls by outcome, voicemails, and missed call to call back, in seconds."""

    calls: dict[str, int]  # CallOutcome -> count
    voicemails: int
    callbacks: int  # missed calls whose caller staff reached on a bridged call
    callback_p50: float | None
    callback_p90: float | None


@dataclass(frozen=True)
class ChannelReport:
    days: int
    timezone: str
    channels: list[ChannelFigures]
    line: PhoneLine


def first_channels(session: Session, lead_ids: set[int]) -> dict[int, str]:
    """Each lead's channel: that of the first request it holds."""
    firsts: dict[int, tuple[datetime, int, str]] = {}
    when = func.coalesce(Submission.requested_at, Submission.received_at)
    for lead_id, source, at, submission_id in session.execute(
        select(Submission.lead_id, Submission.source, when, Submission.id).where(Submission.lead_id.in_(lead_ids))
    ):
        if lead_id is not None and (lead_id not in firsts or (at, submission_id) < firsts[lead_id][:2]):
            firsts[lead_id] = (at, submission_id, channel_of(source))
    return {lead_id: first[2] for lead_id, first in firsts.items()}


def callback_seconds(session: Session, since: datetime | None = None) -> Iterator[float]:
    """For each missed call (not answered live) whose caller staff reached on a bridged call: the seconds from the
    call to that call back."""
    query = (select(PhoneCall.started_at, Claim.bridged_at)
             .join(Submission, Submission.id == PhoneCall.submission_id)
             .join(Claim, Claim.lead_id == Submission.lead_id)
             .where(PhoneCall.outcome != CallOutcome.ANSWERED, Claim.bridged_at.is_not(None)))
    if since is not None:
        query = query.where(PhoneCall.started_at >= since)
    for called_at, bridged_at in session.execute(query):
        if bridged_at is not None and bridged_at >= called_at:
            yield (bridged_at - called_at).total_seconds()


def calls_by_outcome(session: Session, since: datetime | None = None) -> tuple[dict[str, int], int]:
    """Ended inbound calls per outcome, and how many left a voicemail."""
    query = select(PhoneCall.outcome, func.count(), func.count(PhoneCall.recording_sid)).where(
        PhoneCall.outcome.is_not(None)).group_by(PhoneCall.outcome)
    if since is not None:
        query = query.where(PhoneCall.started_at >= since)
    counts = dict.fromkeys(CALL_OUTCOMES, 0)
    voicemails = 0
    for outcome, count, recorded in session.execute(query):
        counts[outcome or ""] = count
        voicemails += recorded
    return counts, voicemails


def channel_report(session: Session, *, days: int, now: datetime, timezone: str) -> ChannelReport:
    """The last `days` days (today included) in `timezone`."""
    first_day: date = now.astimezone(ZoneInfo(timezone)).date() - timedelta(days=days - 1)
    start = datetime.combine(first_day, time.min, ZoneInfo(timezone))
    when = func.coalesce(Submission.requested_at, Submission.received_at)
    requests: dict[str, int] = defaultdict(int)
    for source, count in session.execute(
        select(Submission.source, func.count()).where(Submission.lead_id.is_not(None), when >= start, when <= now)
        .group_by(Submission.source)
    ):
        requests[channel_of(source)] += count
    new_leads = set(session.scalars(select(Lead.id).where(
        Lead.created_at >= start, Lead.created_at <= now, Lead.status != LeadStatus.MERGED)))
    claims = list(session.scalars(select(Claim).where(Claim.submitted_at >= start, Claim.submitted_at <= now)))
    channel = first_channels(session, new_leads | {claim.lead_id for claim in claims})
    leads: dict[str, int] = defaultdict(int)
    for lead_id in new_leads:
        leads[channel.get(lead_id, "form")] += 1
    claimed: dict[str, list[Claim]] = defaultdict(list)
    for claim in claims:
        claimed[channel.get(claim.lead_id, "form")].append(claim)
    figures = [ChannelFigures(name, leads[name], requests[name], speed_of(claimed[name])) for name in CHANNELS]
    counts, voicemails = calls_by_outcome(session, start)
    waits = list(callback_seconds(session, start))
    line = PhoneLine(counts, voicemails, len(waits), percentile(waits, 0.5), percentile(waits, 0.9))
    return ChannelReport(days, timezone, figures, line)


def format_channel_report(report: ChannelReport) -> str:
    """The report as plain-text tables for a terminal."""
    columns = ["leads", "requests", "claims", "claim p50", "claim p90", "calls", "call p50", "call p90"]
    lines = [f"by channel, last {report.days} days ({report.timezone}): a lead counts under its first request", ""]
    lines += text_table(["channel", *columns], [
        [row.channel, str(row.leads), str(row.requests), *speed_cells(row.speed)] for row in report.channels])
    line = report.line
    lines += ["", "the center's number, inbound calls:", *text_table(
        ["answered live", "missed", "abandoned", "after hours", "voicemail only", "voicemails"],
        [[str(line.calls[CallOutcome.ANSWERED]), str(line.calls[CallOutcome.MISSED]),
          str(line.calls[CallOutcome.ABANDONED]), str(line.calls[CallOutcome.AFTER_HOURS]),
          str(line.calls[CallOutcome.NOT_RUNG]), str(line.voicemails)]])]
    lines += ["", f"missed call to call back: {line.callbacks} reached, median {format_duration(line.callback_p50)}, "
                  f"90th percentile {format_duration(line.callback_p90)}"]
    return "\n".join(lines)

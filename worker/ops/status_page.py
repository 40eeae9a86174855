"""The admissions manager's status page: speed to lead for the last 14 days, behind HTTP Basic login.

Rendered on the server with a generated SVG chart: no JavaScript, no CDN, nothing fetched from elsewhere. Lead
references and staff names only, never PHI.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from datetime import datetime
from html import escape
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from config.settings import Settings
from worker.ops.channels import ChannelReport, channel_report
from worker.ops.metrics import metrics_router
from worker.ops.reports import DaySpeed, Speed, SpeedReport, format_duration, speed_cells, speed_report
from worker.store.db import session_scope, utcnow
from worker.store.models import CallOutcome

log = logging.getLogger(__name__)

REPORT_DAYS = 14
CHART_WIDTH, CHART_HEIGHT, MARGIN = 720, 260, 48


def hash_password(password: str, salt: bytes, iterations: int = 600_000) -> str:
    """`pbkdf2_sha256:<iterations>:<salt b64>:<hash b64>`, the form STATUS_PASSWORD_HASH takes (no `$`, which
    docker compose would read as a variable)."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return ":".join(["pbkdf2_sha256", str(iterations), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()])


def password_matches(password: str, settings: Settings) -> bool:
    if settings.status_password_hash is not None:
        stored = settings.status_password_hash.get_secret_value()
        try:
            scheme, iterations, salt, _ = stored.split(":")
            expected = hash_password(password, base64.b64decode(salt), int(iterations))
        except (ValueError, binascii.Error):
            log.error("STATUS_PASSWORD_HASH is malformed: generate it with `admitflow report hash-password`")
            return False
        return scheme == "pbkdf2_sha256" and hmac.compare_digest(expected, stored)
    if settings.status_password is not None and settings.environment != "production":
        return hmac.compare_digest(password.encode(), settings.status_password.get_secret_value().encode())
    return False


def _authorized(request: Request, settings: Settings) -> bool:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        username, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user_ok = hmac.compare_digest(username.encode(), (settings.status_username or "").encode())
    return password_matches(password, settings) and user_ok


def _y(seconds: float, top: float) -> float:
    return CHART_HEIGHT - MARGIN - (seconds / top) * (CHART_HEIGHT - 2 * MARGIN)


def speed_chart(days: list[DaySpeed], measure: Literal["claim", "call"]) -> str:
    """An SVG line chart of the daily median and 90th percentile of time to claim or to call (`measure`)."""
    series = {
        "p50": [getattr(day.speed, f"{measure}_p50") for day in days],
        "p90": [getattr(day.speed, f"{measure}_p90") for day in days],
    }
    top = max([60.0, *(v for values in series.values() for v in values if v is not None)])
    step = (CHART_WIDTH - 2 * MARGIN) / max(1, len(days) - 1)
    label = "claim" if measure == "claim" else "call back"
    parts = [f'<svg id="{measure}-chart" xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" '
             f'height="{CHART_HEIGHT}" role="img" aria-label="Daily time to {label}, median and 90th percentile">',
             f'<line x1="{MARGIN}" y1="{CHART_HEIGHT - MARGIN}" x2="{CHART_WIDTH - MARGIN}" '
             f'y2="{CHART_HEIGHT - MARGIN}" stroke="#555"/>',
             f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{CHART_HEIGHT - MARGIN}" stroke="#555"/>',
             f'<text x="4" y="{MARGIN - 8}" font-size="11">{escape(format_duration(top))}</text>',
             f'<text x="4" y="{CHART_HEIGHT - MARGIN}" font-size="11">0</text>']
    for index, day in enumerate(days):
        if (len(days) - 1 - index) % 2 == 0:  # every other day, counted back from today
            parts.append(f'<text x="{MARGIN + index * step:.1f}" y="{CHART_HEIGHT - MARGIN + 16}" font-size="10" '
                         f'text-anchor="middle">{day.day:%m-%d}</text>')
    for name, colour in (("p50", "#1f77b4"), ("p90", "#d62728")):
        points = [(MARGIN + index * step, _y(value, top))
                  for index, value in enumerate(series[name]) if value is not None]
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline class="series-{name}" fill="none" stroke="{colour}" stroke-width="2" '
                         f'points="{path}"/>')
        parts.extend(f'<circle class="point-{name}" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>'
                     for x, y in points)
    parts.append(f'<text x="{CHART_WIDTH - MARGIN - 150}" y="20" font-size="12" fill="#1f77b4">median</text>'
                 f'<text x="{CHART_WIDTH - MARGIN - 90}" y="20" font-size="12" fill="#d62728">90th percentile</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cells(*values: object) -> str:
    return "".join(f"<td>{escape(str(value))}</td>" for value in values)


def _speed_row(label: str, speed: Speed) -> str:
    return f"<tr>{_cells(label, *speed_cells(speed))}</tr>"


def channels_section(report: ChannelReport) -> str:
    """Speed to lead by channel, and the center's number: calls by outcome, voicemails, missed call to call back."""
    fd = format_duration
    rows = "".join(f"<tr>{_cells(row.channel, row.leads, row.requests, *speed_cells(row.speed))}</tr>"
                   for row in report.channels)
    line = report.line
    calls = _cells(*(line.calls[outcome] for outcome in (CallOutcome.ANSWERED, CallOutcome.MISSED,
                                                          CallOutcome.ABANDONED, CallOutcome.AFTER_HOURS,
                                                          CallOutcome.NOT_RUNG)), line.voicemails,
                   line.callbacks, fd(line.callback_p50), fd(line.callback_p90))
    return f"""<h2>By channel</h2><p>A lead counts under its first request.</p>
<table id="channels"><tr><th>channel</th><th>leads</th><th>requests</th><th>claims</th><th>claim p50</th>
<th>claim p90</th><th>calls</th><th>call p50</th><th>call p90</th></tr>{rows}</table>
<h2>The center's number</h2>
<table id="phone-line"><tr><th>answered live</th><th>missed</th><th>abandoned</th><th>after hours</th>
<th>voicemail only</th><th>voicemails</th><th>missed calls called back</th><th>missed call to call back p50</th>
<th>p90</th></tr><tr>{calls}</tr></table>"""


def render_status(report: SpeedReport, channels: ChannelReport | None = None) -> str:
    """The whole page. Every value is escaped; staff names come from the roster, lead refs are ours."""
    day_rows = "".join(_speed_row(f"{d.day:%a %Y-%m-%d}", d.speed) for d in reversed(report.days))
    staff_rows = "".join(_speed_row(s.staff_name, s.speed) for s in report.staff) \
        or '<tr><td colspan="7">No claims in this period.</td></tr>'
    unclaimed = "".join(f"<tr>{_cells(u.ref, format_duration(u.age.total_seconds()))}</tr>"
                        for u in report.unclaimed) \
        or '<tr><td colspan="2">None: every alerted lead is claimed.</td></tr>'
    head = ("<tr><th>{}</th><th>claims</th><th>claim p50</th><th>claim p90</th><th>calls</th><th>call p50</th>"
            "<th>call p90</th></tr>")
    generated: datetime = report.generated_at
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>admitflow: speed to lead</title>
<meta name="robots" content="noindex">
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}}td:first-child,th:first-child{{text-align:left}}
.figures span{{display:inline-block;margin-right:2rem;font-size:1.2rem}}</style></head>
<body><h1>Speed to lead, last {len(report.days)} days</h1>
<p>Times run from the person's submission; days are in {escape(report.timezone)}. Generated
{generated:%Y-%m-%d %H:%M} UTC.</p>
<p class="figures"><span id="leads-today">Leads today: {report.leads_today}</span>
<span id="unclaimed-count">Unclaimed now: {len(report.unclaimed)}</span>
<span id="alerts">Alerts sent: {report.alerts_sent}, undelivered: {report.alerts_undelivered}</span></p>
<h2>Time to claim per day</h2>
{speed_chart(report.days, "claim")}
<h2>Time to call back per day</h2>
{speed_chart(report.days, "call")}
<h2>Unclaimed now</h2><table id="unclaimed"><tr><th>lead</th><th>waiting</th></tr>{unclaimed}</table>
<h2>Per staff member</h2><table id="staff">{head.format("staff member")}{staff_rows}</table>
<h2>Per day</h2><table id="days">{head.format("day")}{day_rows}</table>
{channels_section(channels) if channels is not None else ""}
</body></html>"""


def observability_router(settings: Settings) -> APIRouter:
    """GET /metrics, and GET /status behind HTTP Basic. Without STATUS_USERNAME and a password setting /status
    answers 503, never an open page."""
    router = APIRouter()
    router.include_router(metrics_router(settings))
    # A plain password in the environment is for development; production takes the hash only.
    plain_allowed = settings.status_password is not None and settings.environment != "production"
    configured = bool(settings.status_username) and (settings.status_password_hash is not None or plain_allowed)
    if not configured:
        log.warning("the status page is off: set STATUS_USERNAME and STATUS_PASSWORD_HASH to serve /status")

    @router.get("/status", include_in_schema=False)
    async def status(request: Request) -> Response:
        if not configured:
            return Response("The status page is off: set STATUS_USERNAME and STATUS_PASSWORD_HASH.",
                            status_code=503, media_type="text/plain")
        if not await run_in_threadpool(_authorized, request, settings):
            return Response("Log in with the status page credentials.", status_code=401, media_type="text/plain",
                            headers={"WWW-Authenticate": 'Basic realm="admitflow status", charset="UTF-8"'})

        def build() -> tuple[SpeedReport, ChannelReport]:
            now, zone = utcnow(), settings.center_timezone
            with session_scope() as session:
                return (speed_report(session, days=REPORT_DAYS, now=now, timezone=zone),
                        channel_report(session, days=REPORT_DAYS, now=now, timezone=zone))

        report, channels = await run_in_threadpool(build)
        return HTMLResponse(render_status(report, channels), headers={"Cache-Control": "no-store"})

    return router

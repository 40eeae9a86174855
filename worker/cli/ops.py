"""Figures for the admissions manager: the speed-to-lead report and the status page password."""

from __future__ import annotations

import click

from worker.cli.common import command_settings, open_store
from worker.store.db import session_scope


@click.group()
def report() -> None:
    """Speed-to-lead figures for the admissions manager (the same as GET /status), overall, per source and by
    channel."""


@report.command("speed")
@click.option("--days", type=click.IntRange(1, 366), default=14, show_default=True, help="Days back, today included.")
def report_speed(days: int) -> None:
    """Median and 90th-percentile time to claim and to call, per day and per staff member; lead references only."""
    from worker.ops.reports import format_speed_report, speed_report
    from worker.store.db import utcnow

    settings = command_settings()
    open_store(settings)
    with session_scope() as session:
        figures = speed_report(session, days=days, now=utcnow(), timezone=settings.center_timezone)
    click.echo(format_speed_report(figures))


@report.command("sources")
@click.option("--days", type=click.IntRange(1, 366), default=30, show_default=True, help="Days back, today included.")
def report_sources(days: int) -> None:
    """Leads and time to claim per source (UTM source and medium, ad click id, referring site); no PHI."""
    from worker.ops.reports import format_source_report, source_report
    from worker.store.db import utcnow

    settings = command_settings()
    open_store(settings)
    with session_scope() as session:
        rows = source_report(session, settings, days=days, now=utcnow())
    click.echo(format_source_report(rows, days))


@report.command("channels")
@click.option("--days", type=click.IntRange(1, 366), default=14, show_default=True, help="Days back, today included.")
def report_channels(days: int) -> None:
    """Leads, requests and speed to lead by channel (form, call, text), and the center's number: calls answered
    live, missed, abandoned, after hours, voicemails, and time from a missed call to the call back."""
    from worker.ops.channels import channel_report, format_channel_report
    from worker.store.db import utcnow

    settings = command_settings()
    open_store(settings)
    with session_scope() as session:
        figures = channel_report(session, days=days, now=utcnow(), timezone=settings.center_timezone)
    click.echo(format_channel_report(figures))


@report.command("hash-password")
@click.password_option("--password", help="The status page password (prompted, not echoed).")
def report_hash_password(password: str) -> None:
    """Print a STATUS_PASSWORD_HASH for the status page, for your secret store."""
    import secrets

    from worker.ops.status_page import hash_password

    click.echo(f"STATUS_PASSWORD_HASH={hash_password(password, secrets.token_bytes(16))}")

"""The admissions roster as admitflow reads it."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from worker.cli.common import command_settings


@click.group()
def roster() -> None:
    """The admissions roster: staff, weekly shifts and escalation ladders (ROSTER_FILE)."""


@roster.command("show")
@click.option("--at", "at", type=click.DateTime(["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]), default=None,
              help="A moment to ask about instead of now, in CENTER_TIMEZONE (YYYY-MM-DDTHH:MM).")
def roster_show(at: datetime | None) -> None:
    """Who is on call now (or --at), in escalation order, and who takes over next."""
    from zoneinfo import ZoneInfo

    from worker.staff.roster import load_roster

    settings = command_settings()
    zone = ZoneInfo(settings.center_timezone)
    loaded = load_roster(settings.roster_file, zone)
    moment = at.replace(tzinfo=zone) if at else datetime.now(UTC).astimezone(zone)
    click.echo(f"roster {settings.roster_file}, times in {settings.center_timezone}")
    handover = loaded.next_handover(moment)
    for title, when in (("now" if at is None else "at", moment), ("next, from", handover)):
        if when is None:
            click.echo("next: nobody else; this ladder is on call all week")
            continue
        shift = loaded.shift_at(when)
        label = f"shift {shift.name or shift.on_call}" if shift else "no shift: supervisor only"
        click.echo(f"{title} {when.strftime('%a %d %b %Y %H:%M %Z')} ({label}):")
        for rung in loaded.ladder(when):
            owner = f"HubSpot owner {rung.member.crm_owner_id}" if rung.member.crm_owner_id else "no CRM owner"
            click.echo(f"  {rung.role:<11} {rung.member.name:<24} {rung.member.phone:<14} {owner}")

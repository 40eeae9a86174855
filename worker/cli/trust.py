"""The audit trail, retention purges and the PHI keys."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from worker.cli.common import command_settings, open_store
from worker.store.db import session_scope
from worker.store.phi import current_vault, generate_keys
from worker.trust import audit, retention
from worker.trust.key_rotation import rotate_blind_indexes, rotate_keys


@click.command("audit")
@click.option("--lead", "lead_ref", default=None, help="Only this lead's events (its reference, e.g. R-7K2QX).")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="Only events at or after this UTC date (YYYY-MM-DD).")
def audit_command(lead_ref: str | None, since: datetime | None) -> None:
    """The audit trail, oldest first: when, who, what, lead, submission, outbox row, detail (no PHI)."""
    settings = command_settings()
    open_store(settings)
    with session_scope() as session:
        found = audit.events(session, lead_ref=lead_ref.strip().upper() if lead_ref else None,
                             since=since.replace(tzinfo=UTC) if since else None)
        for event in found:
            click.echo(f"{event.at.isoformat(timespec='seconds')}\t{event.actor_kind}:{event.actor}\t{event.action}\t"
                       f"{event.lead_ref or '-'}\t{event.submission_id or '-'}\t{event.outbox_id or '-'}\t"
                       f"{event.detail or ''}")
    if not found:
        click.echo("no audit events match", err=True)


@click.command()
@click.option("--dry-run", is_flag=True, help="Only print how many raw entries would be purged.")
def purge(dry_run: bool) -> None:
    """Purge raw entries (and the messages in them) older than RETENTION_DAYS whose lead the CRM holds.

    Leads whose CRM sync is not delivered keep everything. Each purge is recorded in the audit trail.
    """
    settings = command_settings()
    open_store(settings)
    now = datetime.now(UTC)
    with session_scope() as session:
        counts = retention.purge_counts(session, now, settings.retention_days)
    click.echo(f"older than {settings.retention_days} days: {counts.due} raw entries to purge, "
               f"{counts.kept_undelivered} kept (their lead's CRM sync is not delivered)")
    if dry_run:
        return
    purged, actor = 0, audit.operator_name()
    while True:
        with session_scope() as session:
            done = retention.purge_batch(session, now, settings.retention_days, actor)
        purged += done
        if done < retention.BATCH:
            break
    click.echo(f"purged {purged} raw entries")


@click.group()
def keys() -> None:
    """PHI encryption keys."""


@keys.command("rotate")
@click.option("--batch", type=int, default=500, show_default=True, help="Rows per transaction.")
def keys_rotate(batch: int) -> None:
    """Re-encrypt every PHI value with the first key in ADMITFLOW_ENCRYPTION_KEYS and recompute every dedup digest
    with the first key in ADMITFLOW_BLIND_INDEX_KEY; run again to resume.

    Keep the old keys after the new one until this reports nothing left to rotate.
    """
    settings = command_settings()
    open_store(settings)
    vault = current_vault()

    def progress(table: str, rows: int) -> None:
        click.echo(f"{table}: {rows} row(s) checked", err=True)

    with session_scope() as session:
        result = rotate_keys(session, vault, batch=batch, progress=progress)
        indexes = rotate_blind_indexes(session, vault, batch=batch, progress=progress)
    click.echo(f"checked {result.checked} encrypted value(s), re-encrypted {result.rotated} with the newest key")
    click.echo(f"checked {indexes.checked} blind index(es), recomputed {indexes.rewritten} with the newest key, "
               f"deleted {indexes.stale_locks} unused dedup lock row(s)")


@keys.command("generate")
def keys_generate() -> None:
    """Print a new ADMITFLOW_ENCRYPTION_KEYS and ADMITFLOW_BLIND_INDEX_KEY for your secret store."""
    for name, value in generate_keys().items():
        click.echo(f"{name}={value}")

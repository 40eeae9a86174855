"""Bringing entries in by hand: import files of entries, poll now, backfill a form's history."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from config.settings import Settings
from config.sites import load_sites, site_named
from integrations.errors import IntegrationError
from integrations.gravityforms.client import PAGE_SIZE
from worker.cli.common import (
    command_settings,
    open_store,
    print_table,
    read_entries,
    read_json_file,
    require_broker,
)
from worker.delivery.dispatch import (
    HISTORY_PAGE_SIZE,
    CeleryDispatcher,
    HistoryPages,
    InlineDispatcher,
    dispatcher_for,
    process_stored,
)
from worker.delivery.outbox import deliver
from worker.intake import backfill as backfill_runs
from worker.intake.entries import RejectedEntry, entry_meta, register_forms, store_entries
from worker.intake.poller import client_for, poll_status, run_due_polls
from worker.staff.services import default_services
from worker.store.db import session_scope
from worker.store.models import SubmissionSource, SubmissionState


@click.command()
@click.option("--form", "form_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The form: a form object (GET /wp-json/gf/v2/forms/{id}) or an Export Forms file.")
@click.option("--form-id", default=None, help="With an export of several forms, register only this one.")
@click.argument("entries_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", default=None, help="Site name (default ADMITFLOW_SITE).")
@click.option("--enqueue", is_flag=True, help="Hand processing to the Celery workers instead of doing it here.")
def ingest(form_file: Path, form_id: str | None, entries_file: Path, site: str | None, enqueue: bool) -> None:
    """Import entries (a JSON array, the REST API's answer, or JSON lines) through the same pipeline as backfill,
    a page at a time. Exits 1 when any entry was rejected (each is named with its reason)."""
    settings = command_settings()
    open_store(settings)
    site = site or settings.site
    with session_scope() as session:
        try:
            form_ids = {definition.form_id for definition, _ in register_forms(
                session, site=site, document=read_json_file(form_file), form_id=form_id)}
        except RejectedEntry as exc:
            raise click.ClickException(str(exc)) from None
    if enqueue:
        require_broker(settings)
    entries = read_entries(entries_file)
    valid, rejected, other_forms = screen_entries(entries, form_ids)
    for rejection in rejected:
        click.echo(f"rejected {rejection}", err=True)
    for other_id, entry_ids in other_forms.items():
        shown = ", ".join(entry_ids[:10]) + (", ..." if len(entry_ids) > 10 else "")
        click.echo(f"warning: {len(entry_ids)} entries are of form {other_id}, not of --form's form "
                   f"{', '.join(sorted(form_ids))} (entries {shown}); unless form {other_id} is registered they are "
                   "kept and held until `admitflow forms add` registers it", err=True)
    counts: Counter[str] = Counter({"received": len(entries), "rejected": len(rejected)})
    import_pages(valid, site, settings, counts, CeleryDispatcher() if enqueue else None)
    order = ["received", "new leads", "merged duplicates", "rejected", "already seen", "flagged", "spam",
             "enqueued", "deliveries pending"]
    click.echo(", ".join(f"{key} {counts[key]}" for key in order if key in counts or key in order[:5]))
    if rejected:
        sys.exit(1)


def screen_entries(entries: list[Any], form_ids: set[str]
                   ) -> tuple[list[dict[str, Any]], list[str], dict[str, list[str]]]:
    """The entries that can be stored; a line per rejected one naming it and why; the ids of entries of other
    forms than those registered from --form, by form."""
    valid: list[dict[str, Any]] = []
    rejected: list[str] = []
    other_forms: dict[str, list[str]] = {}
    for position, entry in enumerate(entries, start=1):
        try:
            meta = entry_meta(entry)
        except RejectedEntry as exc:
            rejected.append(f"{_entry_name(entry, position)}: {exc}")
            continue
        valid.append(entry)
        if meta.form_id not in form_ids:
            other_forms.setdefault(meta.form_id, []).append(meta.id)
    return valid, rejected, other_forms


def _entry_name(entry: Any, position: int) -> str:
    entry_id = entry.get("id") if isinstance(entry, dict) else None
    text = str(entry_id) if isinstance(entry_id, str | int) and not isinstance(entry_id, bool) else ""
    printable = text.strip() if text.strip().isprintable() and 0 < len(text.strip()) <= 32 else ""
    return f"entry {printable!r} (#{position} in the file)" if printable else f"entry #{position} in the file"


def import_pages(entries: list[dict[str, Any]], site: str, settings: Settings, counts: Counter[str],
                 celery: CeleryDispatcher | None) -> None:
    """Store, process and deliver entries a page at a time, as backfill does (or hand the pages to the workers)."""
    services = default_services()
    for start in range(0, len(entries), HISTORY_PAGE_SIZE):
        with session_scope() as session:
            stored = store_entries(session, site=site, entries=entries[start:start + HISTORY_PAGE_SIZE],
                                   source=SubmissionSource.CLI)
        created = [item.submission_id for item in stored if item.created]
        counts["already seen"] += len(stored) - len(created)
        if celery:
            celery.submissions_stored(created, page_size=HISTORY_PAGE_SIZE)
            counts["enqueued"] += len(created)
            continue
        for outcome in process_stored(created, settings) if created else []:
            if outcome.state == SubmissionState.PROCESSED:
                counts["new leads" if outcome.new_lead else "merged duplicates"] += 1
            elif outcome.state is not None:
                counts[str(outcome.state)] += 1
            for outbox_id in outcome.outbox_ids:
                with session_scope() as session:
                    if deliver(session, outbox_id, services, batches=False).state != "delivered":
                        counts["deliveries pending"] += 1


@click.group()
def poll() -> None:
    """Polling Gravity Forms' REST API, the net under the webhook."""


@poll.command("run")
def poll_run() -> None:
    """Poll every due form once (what beat does every minute), e.g. from cron on the embedded default."""
    settings = command_settings()
    open_store(settings)
    dispatcher = dispatcher_for(settings, default_services())
    with session_scope() as session:
        results = run_due_polls(session, load_sites(settings), settings)
    for result in results:
        dispatcher.submissions_stored(result.released_submission_ids + result.new_submission_ids)
        state = f"failed: {result.error}" if result.error else "ok"
        click.echo(f"{result.site} form {result.form_id}: seen {result.seen}, "
                   f"new {len(result.new_submission_ids)}, {state}")
    if not results:
        click.echo("no form is due (or none is configured for polling)")


@poll.command("status")
def poll_status_command() -> None:
    """Per form: last success, failures in a row, next poll, last error."""
    settings = command_settings()
    open_store(settings)
    polled = [f"{site.name} form {form.id}" for site in load_sites(settings) if site.can_poll for form in site.forms]
    with session_scope() as session:
        rows = [
            (row.site, row.form_id, "OK" if row.consecutive_failures == 0 else f"FAILING x{row.consecutive_failures}",
             row.last_success_at.isoformat(timespec="seconds") if row.last_success_at else "never",
             row.next_poll_at.isoformat(timespec="seconds"), row.entries_new, row.last_error)
            for row in poll_status(session)
        ]
    print_table(("SITE", "FORM", "HEALTH", "LAST SUCCESS", "NEXT POLL", "NEW", "LAST ERROR"), rows,
                empty="no form has been polled yet" if polled else
                "no form is polled: set GRAVITYFORMS_BASE_URL, the consumer key and secret and GRAVITYFORMS_FORM_IDS "
                "(or a site's forms in SITES_FILE)")
    if not rows and polled:
        click.echo(f"configured for polling: {', '.join(polled)}; beat polls them (or run `admitflow poll run`)",
                   err=True)


@click.command()
@click.option("--site", "site_name", default=None, help="Site name (default: the first configured site).")
@click.option("--form", "form_id", required=True, help="Gravity Forms form id.")
@click.option("--since", required=True, type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Import entries created at or after this UTC date (YYYY-MM-DD).")
@click.option("--enqueue", is_flag=True, help="Hand processing to the Celery workers instead of doing it here.")
def backfill(site_name: str | None, form_id: str, since: datetime, enqueue: bool) -> None:
    """Import a form's history through the same pipeline; run it again to resume after an interruption.

    Entries older than BACKFILL_ALERT_MAX_AGE_HOURS go to the CRM without texting staff.
    """
    settings = command_settings()
    open_store(settings)
    sites = load_sites(settings)
    site = site_named(sites, site_name) if site_name else sites[0]
    if site is None or not (site.base_url and site.consumer_key and site.consumer_secret):
        raise click.ClickException(
            f"site {site_name or sites[0].name} has no Gravity Forms API address and key pair configured "
            "(GRAVITYFORMS_BASE_URL, GRAVITYFORMS_CONSUMER_KEY/SECRET or SITES_FILE)"
        )
    if enqueue:
        require_broker(settings)
    dispatcher = CeleryDispatcher() if enqueue else InlineDispatcher(default_services())
    client = client_for(site, settings)
    with session_scope() as session:
        run = backfill_runs.start(session, site=site.name, form_id=form_id, since=since.replace(tzinfo=UTC))
        if run.finished_at is not None:
            click.echo(f"this backfill finished at {run.finished_at.isoformat(timespec='seconds')}; "
                       f"{run.imported} entries were imported")
            return
        counts: Counter[str] = Counter()
        try:
            page = backfill_runs.import_page(session, run, client)
        except IntegrationError as exc:
            raise click.ClickException(f"{exc.message}; run the same command again to resume") from None
        with (click.progressbar(length=max(page.total, 1), label=f"{site.name} form {form_id}", file=sys.stderr) as bar,
              HistoryPages.to(dispatcher) as history):
            bar.update((run.next_page - 2) * PAGE_SIZE)
            while True:
                history.add(page.stored_ids)
                counts.update({"imported": len(page.stored_ids), "already seen": page.already_seen,
                               "skipped": page.skipped})
                bar.update(len(page.stored_ids) + page.already_seen + page.skipped)
                if page.finished:
                    break
                try:
                    page = backfill_runs.import_page(session, run, client)
                except IntegrationError as exc:
                    raise click.ClickException(f"{exc.message}; run the same command again to resume") from None
    click.echo(f"imported {counts['imported']}, already seen {counts['already seen']}, "
               f"skipped (before --since or invalid) {counts['skipped']}")

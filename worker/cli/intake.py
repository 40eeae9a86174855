"""Bringing entries in by hand: register forms, import files of entries, poll now, backfill a form's history."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import click

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
from worker.delivery.dispatch import CeleryDispatcher, InlineDispatcher, dispatcher_for
from worker.delivery.outbox import deliver
from worker.intake import backfill as backfill_runs
from worker.intake.entries import RejectedEntry, register_form, store_entry
from worker.intake.poller import client_for, poll_status, run_due_polls
from worker.leads.processing import process_submission
from worker.staff.services import default_services
from worker.store.db import session_scope
from worker.store.models import SubmissionSource, SubmissionState
from worker.store.schema import ensure_schema


@click.group()
def forms() -> None:
    """Gravity Forms form definitions."""


@forms.command("add")
@click.argument("form_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", default=None, help="Site name (default ADMITFLOW_SITE).")
def forms_add(form_file: Path, site: str | None) -> None:
    """Register a form object as GET /wp-json/gf/v2/forms/{id} returns it."""
    settings = command_settings()
    open_store(settings)
    with session_scope() as session:
        try:
            form_object = read_json_file(form_file)
            definition, held = register_form(session, site=site or settings.site, form_object=form_object)
        except RejectedEntry as exc:
            raise click.ClickException(str(exc)) from None
        form_id = definition.form_id
    dispatcher_for(settings, default_services()).submissions_stored(held)
    click.echo(f"form {form_id} registered; {len(held)} held submission(s) released")


@click.command()
@click.option("--form", "form_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The form object (GET /wp-json/gf/v2/forms/{id}).")
@click.argument("entries_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", default=None, help="Site name (default ADMITFLOW_SITE).")
@click.option("--enqueue", is_flag=True, help="Hand processing to the Celery workers instead of doing it here.")
def ingest(form_file: Path, entries_file: Path, site: str | None, enqueue: bool) -> None:
    """Import entries (a JSON array, the REST API's answer, or JSON lines) through the same pipeline as webhooks."""
    settings = command_settings()
    ensure_schema(settings)
    site = site or settings.site
    services = default_services()
    counts: Counter[str] = Counter()
    with session_scope() as session:
        try:
            register_form(session, site=site, form_object=read_json_file(form_file))
        except RejectedEntry as exc:
            raise click.ClickException(str(exc)) from None
    if enqueue:
        require_broker(settings)
    celery = CeleryDispatcher() if enqueue else None
    for entry in read_entries(entries_file):
        counts["received"] += 1
        try:
            with session_scope() as session:
                stored = store_entry(session, site=site, entry=entry, source=SubmissionSource.CLI)
        except RejectedEntry as exc:
            counts["rejected"] += 1
            click.echo(f"rejected entry #{counts['received']}: {exc}", err=True)
            continue
        if not stored.created:
            counts["already seen"] += 1
            continue
        if celery:
            celery.submission_stored(stored.submission_id)
            counts["enqueued"] += 1
            continue
        with session_scope() as session:
            outcome = process_submission(session, stored.submission_id, settings)
        if outcome.state == SubmissionState.PROCESSED:
            counts["new leads" if outcome.new_lead else "merged duplicates"] += 1
        elif outcome.state is not None:
            counts[str(outcome.state)] += 1
        for outbox_id in outcome.outbox_ids:
            with session_scope() as session:
                delivery = deliver(session, outbox_id, services, batches=False)
            if delivery.state != "delivered":
                counts["deliveries pending"] += 1
    order = ["received", "new leads", "merged duplicates", "rejected", "already seen", "flagged", "spam",
             "enqueued", "deliveries pending"]
    summary = ", ".join(f"{key} {counts[key]}" for key in order if key in counts or key in order[:5])
    click.echo(summary)

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
        with click.progressbar(length=max(page.total, 1), label=f"{site.name} form {form_id}", file=sys.stderr) as bar:
            bar.update((run.next_page - 2) * PAGE_SIZE)
            while True:
                dispatcher.submissions_stored(page.stored_ids)
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

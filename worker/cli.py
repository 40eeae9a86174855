"""The `admitflow` command: serve, work, migrate, ingest and inspect."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.logging import configure_logging
from config.settings import Settings, get_settings
from config.sites import SitesError, load_sites, site_named
from integrations.errors import IntegrationError
from integrations.gravityforms.client import PAGE_SIZE
from worker import audit, retention
from worker import backfill as backfill_runs
from worker import outbox as outbox_rows
from worker.db import session_scope
from worker.dispatch import CeleryDispatcher, InlineDispatcher, dispatcher_for
from worker.export import lead_record
from worker.intake import RejectedEntry, register_form, store_entry
from worker.key_rotation import rotate_blind_indexes, rotate_keys
from worker.models import Lead, OutboxMessage, OutboxState, Submission, SubmissionSource, SubmissionState
from worker.outbox import deliver
from worker.phi import KeyConfigurationError, current_vault, generate_keys
from worker.poller import client_for, poll_status, run_due_polls
from worker.processing import process_submission
from worker.roster import RosterError
from worker.schema import SchemaOutOfDate, ensure_schema, upgrade
from worker.services import CrmConfigurationError, default_services
from worker.templates import TemplateError


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_entries(path: Path) -> list[Any]:
    """A JSON array of entries, the REST API's {"entries": [...]} answer, or JSON lines."""
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise click.ClickException(f"{path} line {number} is not valid JSON ({exc.msg})") from None
        return entries
    if isinstance(document, dict) and isinstance(document.get("entries"), list):
        return list(document["entries"])
    if isinstance(document, list):
        return document
    return [document]


# Misconfiguration an operator fixes from the message: shown as one line, not a traceback.
CONFIGURATION_ERRORS = (
    CrmConfigurationError, KeyConfigurationError, RosterError, SchemaOutOfDate, SitesError, TemplateError,
)


class AdmitflowGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except CONFIGURATION_ERRORS as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=AdmitflowGroup)
def main() -> None:
    """admitflow: Gravity Forms submissions to CRM leads and admissions staff alerts."""


@main.command()
def migrate() -> None:
    """Bring the database schema up to date (Alembic)."""
    settings = _settings()
    upgrade(settings)
    click.echo("database schema is up to date")


@main.command()
@click.option("--host", default=None, help="Bind address (default ADMITFLOW_WEB_HOST).")
@click.option("--port", type=int, default=None, help="Port (default ADMITFLOW_WEB_PORT).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Server processes sharing the port (default ADMITFLOW_WEB_WORKERS).")
def web(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP intake: POST /hooks/gravityforms, GET /healthz."""
    import uvicorn

    from worker.web import create_app

    settings = _settings()
    ensure_schema(settings)
    workers = workers or settings.web_workers
    # Several processes import the app by name and build it each (worker.web.served_app); one serves it from here.
    uvicorn.run("worker.web:served_app" if workers > 1 else create_app(settings), factory=workers > 1,
                workers=workers, host=host or settings.web_host, port=port or settings.web_port,
                log_level=settings.log_level.lower(), access_log=False, log_config=None)


def _require_broker(settings: Settings) -> None:
    if not settings.uses_broker:
        raise click.ClickException(
            "CELERY_BROKER_URL is not set: the worker and beat need a broker (e.g. redis://localhost:6379/0); "
            "without one, `admitflow web` and `admitflow ingest` do the work inline"
        )


@main.command()
@click.option("--concurrency", type=int, default=2, show_default=True)
def worker(concurrency: int) -> None:
    """Run a Celery worker."""
    settings = _settings()
    _require_broker(settings)
    ensure_schema(settings)
    from config.celery_app import app

    app.worker_main(["worker", "--loglevel", settings.log_level, "--concurrency", str(concurrency),
                     "--queues", "admitflow", "--without-gossip", "--without-mingle"])


@main.command()
@click.option("--schedule", type=click.Path(path_type=Path), default=Path("celerybeat-schedule"),
              show_default=True, help="Where beat keeps its last-run times.")
def beat(schedule: Path) -> None:
    """Run Celery beat (the sweeper that re-sends stalled work)."""
    settings = _settings()
    _require_broker(settings)
    from config.celery_app import app

    app.start(["beat", "--loglevel", settings.log_level, "--schedule", str(schedule)])


@main.group()
def forms() -> None:
    """Gravity Forms form definitions."""


@forms.command("add")
@click.argument("form_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", default=None, help="Site name (default ADMITFLOW_SITE).")
def forms_add(form_file: Path, site: str | None) -> None:
    """Register a form object as GET /wp-json/gf/v2/forms/{id} returns it."""
    settings = _settings()
    ensure_schema(settings)
    with session_scope() as session:
        try:
            form_object = _read_json_file(form_file)
            definition, held = register_form(session, site=site or settings.site, form_object=form_object)
        except RejectedEntry as exc:
            raise click.ClickException(str(exc)) from None
        form_id = definition.form_id
    dispatcher_for(settings, default_services()).submissions_stored(held)
    click.echo(f"form {form_id} registered; {len(held)} held submission(s) released")


@main.command()
@click.option("--form", "form_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The form object (GET /wp-json/gf/v2/forms/{id}).")
@click.argument("entries_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", default=None, help="Site name (default ADMITFLOW_SITE).")
@click.option("--enqueue", is_flag=True, help="Hand processing to the Celery workers instead of doing it here.")
def ingest(form_file: Path, entries_file: Path, site: str | None, enqueue: bool) -> None:
    """Import entries (a JSON array, the REST API's answer, or JSON lines) through the same pipeline as webhooks."""
    settings = _settings()
    ensure_schema(settings)
    site = site or settings.site
    services = default_services()
    counts: Counter[str] = Counter()
    with session_scope() as session:
        try:
            register_form(session, site=site, form_object=_read_json_file(form_file))
        except RejectedEntry as exc:
            raise click.ClickException(str(exc)) from None
    if enqueue:
        _require_broker(settings)
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


@main.group()
def leads() -> None:
    """Leads."""


@leads.command("export")
@click.option("--output", type=click.File("w", encoding="utf-8"), default="-", help="File to write (default stdout).")
def leads_export(output: TextIO) -> None:
    """Write every lead as a JSON line: id, ref, phone, email, names, repeat_count, crm_id, submissions.

    THE OUTPUT HOLDS PHI (names, phone numbers, emails). Write it only to encrypted storage you are allowed to
    keep it on, and delete it when done.
    """
    settings = _settings()
    ensure_schema(settings)
    exported = 0
    with session_scope() as session:
        for lead in session.scalars(select(Lead).order_by(Lead.id)):
            output.write(json.dumps(lead_record(lead), ensure_ascii=False) + "\n")
            exported += 1
        audit.operator_did(session, audit.AuditAction.EXPORT, detail=f"{exported} leads exported")


@main.group()
def submissions() -> None:
    """Stored submissions (no PHI is printed unless --reveal)."""


@submissions.command("list")
@click.option("--state", type=click.Choice([s.value for s in SubmissionState]), default=None)
def submissions_list(state: str | None) -> None:
    """One line per submission: id, site, form, entry, source, state, lead, flag reason."""
    settings = _settings()
    ensure_schema(settings)
    with session_scope() as session:
        query = select(Submission).order_by(Submission.id)
        if state:
            query = query.where(Submission.state == state)
        for sub in session.scalars(query):
            lead_ref = sub.lead.ref if sub.lead else "-"
            click.echo(f"{sub.id}\t{sub.site}\tform {sub.form_id}\tentry {sub.entry_id}\t{sub.source}\t"
                       f"{sub.state}\t{lead_ref}\t{sub.flag_reason or ''}")


@submissions.command("show")
@click.argument("submission_id", type=int)
@click.option("--reveal", is_flag=True, help="Also print the entry as received (PHI).")
def submissions_show(submission_id: int, reveal: bool) -> None:
    """One submission's record; with --reveal, its raw entry (PHI: only on a screen you may show it on)."""
    settings = _settings()
    ensure_schema(settings)
    with session_scope() as session:
        sub = session.get(Submission, submission_id)
        if sub is None:
            raise click.ClickException(f"no submission {submission_id}")
        if reveal:
            audit.operator_did(session, audit.AuditAction.READ, lead_ref=sub.lead.ref if sub.lead else None,
                               submission_id=sub.id, detail="raw entry revealed")
        click.echo(json.dumps({
            "id": sub.id, "site": sub.site, "form_id": sub.form_id, "entry_id": sub.entry_id, "source": sub.source,
            "state": sub.state, "flag_reason": sub.flag_reason, "received_at": sub.received_at.isoformat(),
            "lead": sub.lead.ref if sub.lead else None, **({"entry": sub.payload} if reveal else {}),
        }, indent=2, ensure_ascii=False))


@main.group()
def outbox() -> None:
    """Pending, delivered and dead CRM syncs and staff alerts."""


def _operator_outbox_change(
    outbox_id: int, change: Callable[[Session, int], object], action: audit.AuditAction
) -> Settings:
    """Apply an operator's change to one outbox row and audit it; a row it cannot apply to is a clean error."""
    settings = _settings()
    ensure_schema(settings)
    with session_scope() as session:
        try:
            change(session, outbox_id)
        except outbox_rows.OutboxCommandError as exc:
            raise click.ClickException(str(exc)) from None
        audit.operator_did(session, action, lead_ref=audit.outbox_lead_ref(session, outbox_id), outbox_id=outbox_id)
    return settings


@outbox.command("retry")
@click.argument("outbox_id", type=int)
def outbox_retry(outbox_id: int) -> None:
    """Deliver a dead or waiting row again now (after fixing what its last error said)."""
    settings = _operator_outbox_change(outbox_id, outbox_rows.retry_now, audit.AuditAction.RETRY)
    dispatcher_for(settings, default_services()).outbox_ready([outbox_id])
    click.echo(f"outbox row {outbox_id} is queued for delivery")


@outbox.command("drop")
@click.argument("outbox_id", type=int)
def outbox_drop(outbox_id: int) -> None:
    """Never deliver this row (e.g. the person was already called)."""
    _operator_outbox_change(outbox_id, outbox_rows.drop, audit.AuditAction.DROP)
    click.echo(f"outbox row {outbox_id} dropped")


@outbox.command("list")
@click.option("--state", type=click.Choice([state.value for state in OutboxState]), default=None)
def outbox_list(state: str | None) -> None:
    """One line per outbox row: id, kind, lead, state, attempts, next attempt, last error."""
    settings = _settings()
    ensure_schema(settings)
    with session_scope() as session:
        query = select(OutboxMessage, Lead.ref).join(Lead, Lead.id == OutboxMessage.lead_id).order_by(OutboxMessage.id)
        if state:
            query = query.where(OutboxMessage.state == state)
        for row, ref in session.execute(query):
            click.echo(f"{row.id}\t{row.kind}\t{ref}\t{row.state}\t{row.attempts}\t"
                       f"{row.next_attempt_at.isoformat()}\t{row.last_error or ''}")
        totals = dict(session.execute(select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)).all())
        click.echo(", ".join(f"{key} {value}" for key, value in sorted(totals.items())) or "outbox is empty",
                   err=True)


@submissions.command("release")
@click.argument("submission_id", type=int)
def submissions_release(submission_id: int) -> None:
    """Process a flagged submission as a person after all (an operator's decision)."""
    settings = _settings()
    ensure_schema(settings)
    with session_scope() as session:
        sub = session.get(Submission, submission_id)
        if sub is None:
            raise click.ClickException(f"no submission {submission_id}")
        if sub.state not in (SubmissionState.FLAGGED, SubmissionState.SPAM):
            raise click.ClickException(f"submission {submission_id} is {sub.state}, not flagged or spam")
        audit_note = f"released by operator from {sub.state}"
        audit.operator_did(session, audit.AuditAction.RELEASE, submission_id=sub.id, detail=f"from {sub.state}")
        sub.state, sub.flag_reason, sub.released = SubmissionState.RECEIVED, None, True
    dispatcher_for(settings, default_services()).submission_stored(submission_id)
    click.echo(f"submission {submission_id} {audit_note}; processing it now")


@main.group()
def poll() -> None:
    """Polling Gravity Forms' REST API, the net under the webhook."""


@poll.command("run")
def poll_run() -> None:
    """Poll every due form once (what beat does every minute), e.g. from cron on the embedded default."""
    settings = _settings()
    ensure_schema(settings)
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
    settings = _settings()
    ensure_schema(settings)
    with session_scope() as session:
        for row in poll_status(session):
            success = row.last_success_at.isoformat(timespec="seconds") if row.last_success_at else "never"
            health = "OK" if row.consecutive_failures == 0 else f"FAILING x{row.consecutive_failures}"
            click.echo(f"{row.site}\tform {row.form_id}\t{health}\tlast success {success}\t"
                       f"next {row.next_poll_at.isoformat(timespec='seconds')}\tnew {row.entries_new}\t"
                       f"{row.last_error or ''}")


@main.command()
@click.option("--site", "site_name", default=None, help="Site name (default: the first configured site).")
@click.option("--form", "form_id", required=True, help="Gravity Forms form id.")
@click.option("--since", required=True, type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Import entries created at or after this UTC date (YYYY-MM-DD).")
@click.option("--enqueue", is_flag=True, help="Hand processing to the Celery workers instead of doing it here.")
def backfill(site_name: str | None, form_id: str, since: datetime, enqueue: bool) -> None:
    """Import a form's history through the same pipeline; run it again to resume after an interruption.

    Entries older than BACKFILL_ALERT_MAX_AGE_HOURS go to the CRM without texting staff.
    """
    settings = _settings()
    ensure_schema(settings)
    sites = load_sites(settings)
    site = site_named(sites, site_name) if site_name else sites[0]
    if site is None or not (site.base_url and site.consumer_key and site.consumer_secret):
        raise click.ClickException(
            f"site {site_name or sites[0].name} has no Gravity Forms API address and key pair configured "
            "(GRAVITYFORMS_BASE_URL, GRAVITYFORMS_CONSUMER_KEY/SECRET or SITES_FILE)"
        )
    if enqueue:
        _require_broker(settings)
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


@main.group()
def report() -> None:
    """Speed-to-lead figures for the admissions manager (the same as GET /status)."""


@report.command("speed")
@click.option("--days", type=click.IntRange(1, 366), default=14, show_default=True, help="Days back, today included.")
def report_speed(days: int) -> None:
    """Median and 90th-percentile time to claim and to call, per day and per staff member; lead references only."""
    from worker.db import utcnow
    from worker.reports import format_speed_report, speed_report

    settings = _settings()
    ensure_schema(settings)
    with session_scope() as session:
        figures = speed_report(session, days=days, now=utcnow(), timezone=settings.center_timezone)
    click.echo(format_speed_report(figures))


@report.command("hash-password")
@click.password_option("--password", help="The status page password (prompted, not echoed).")
def report_hash_password(password: str) -> None:
    """Print a STATUS_PASSWORD_HASH for the status page, for your secret store."""
    import secrets

    from worker.status_page import hash_password

    click.echo(f"STATUS_PASSWORD_HASH={hash_password(password, secrets.token_bytes(16))}")


@main.command("audit")
@click.option("--lead", "lead_ref", default=None, help="Only this lead's events (its reference, e.g. R-7K2QX).")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="Only events at or after this UTC date (YYYY-MM-DD).")
def audit_command(lead_ref: str | None, since: datetime | None) -> None:
    """The audit trail, oldest first: when, who, what, lead, submission, outbox row, detail (no PHI)."""
    settings = _settings()
    ensure_schema(settings)
    with session_scope() as session:
        found = audit.events(session, lead_ref=lead_ref.strip().upper() if lead_ref else None,
                             since=since.replace(tzinfo=UTC) if since else None)
        for event in found:
            click.echo(f"{event.at.isoformat(timespec='seconds')}\t{event.actor_kind}:{event.actor}\t{event.action}\t"
                       f"{event.lead_ref or '-'}\t{event.submission_id or '-'}\t{event.outbox_id or '-'}\t"
                       f"{event.detail or ''}")
    if not found:
        click.echo("no audit events match", err=True)


@main.command()
@click.option("--dry-run", is_flag=True, help="Only print how many raw entries would be purged.")
def purge(dry_run: bool) -> None:
    """Purge raw entries (and the messages in them) older than RETENTION_DAYS whose lead the CRM holds.

    Leads whose CRM sync is not delivered keep everything. Each purge is recorded in the audit trail.
    """
    settings = _settings()
    ensure_schema(settings)
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


@main.group()
def keys() -> None:
    """PHI encryption keys."""


@keys.command("rotate")
@click.option("--batch", type=int, default=500, show_default=True, help="Rows per transaction.")
def keys_rotate(batch: int) -> None:
    """Re-encrypt every PHI value with the first key in ADMITFLOW_ENCRYPTION_KEYS and recompute every dedup digest
    with the first key in ADMITFLOW_BLIND_INDEX_KEY; run again to resume.

    Keep the old keys after the new one until this reports nothing left to rotate.
    """
    settings = _settings()
    ensure_schema(settings)
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



@main.group()
def roster() -> None:
    """The admissions roster: staff, weekly shifts and escalation ladders (ROSTER_FILE)."""


@roster.command("show")
@click.option("--at", "at", type=click.DateTime(["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]), default=None,
              help="A moment to ask about instead of now, in CENTER_TIMEZONE (YYYY-MM-DDTHH:MM).")
def roster_show(at: datetime | None) -> None:
    """Who is on call now (or --at), in escalation order, and who takes over next."""
    from zoneinfo import ZoneInfo

    from worker.roster import RosterError, load_roster

    settings = _settings()
    zone = ZoneInfo(settings.center_timezone)
    try:
        loaded = load_roster(settings.roster_file, zone)
    except RosterError as exc:
        raise click.ClickException(str(exc)) from None
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


if __name__ == "__main__":
    sys.exit(main())

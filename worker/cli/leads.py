"""Looking at leads and submissions: export leads, explain and correct dedup, list, show and release submissions."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TextIO

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from worker.cli.common import command_settings, open_store, print_table
from worker.delivery.dispatch import dispatcher_for
from worker.leads.explain import UnknownLead, explain
from worker.leads.export import lead_record
from worker.leads.processing import process_submission
from worker.staff.services import default_services
from worker.store.db import session_scope
from worker.store.models import Lead, Submission, SubmissionState
from worker.trust import audit
from worker.trust.corrections import Correction, CorrectionError, merge_by_hand, split_by_hand


@click.group()
def leads() -> None:
    """Leads."""


@leads.command("export")
@click.option("--output", type=click.File("w", encoding="utf-8"), default="-", help="File to write (default stdout).")
def leads_export(output: TextIO) -> None:
    """Write every lead as a JSON line: id, ref, phone, email, names, repeat_count, crm_id, submissions.

    THE OUTPUT HOLDS PHI (names, phone numbers, emails). Write it only to encrypted storage you are allowed to
    keep it on, and delete it when done.
    """
    settings = command_settings()
    open_store(settings)
    destination = "stdout" if output.name == "<stdout>" else "a file"
    # The export is on the record before its first line goes out, whatever happens to it after.
    with session_scope() as session:
        total = session.scalar(select(func.count()).select_from(Lead)) or 0
        audit.operator_did(session, audit.AuditAction.EXPORT,
                           detail=f"export of {total} leads to {destination} started")
    exported = 0
    try:
        with session_scope() as session:
            leads = session.scalars(select(Lead).options(selectinload(Lead.submissions)).order_by(Lead.id))
            for lead in leads:
                output.write(json.dumps(lead_record(lead), ensure_ascii=False) + "\n")
                exported += 1
            output.flush()
    finally:
        with session_scope() as session:
            audit.operator_did(session, audit.AuditAction.EXPORT, detail=f"{exported} of {total} leads exported")


@leads.command("why")
@click.argument("ref")
@click.option("--show", is_flag=True, help="Print names, phones and emails in full (PHI; audited).")
def leads_why(ref: str, show: bool) -> None:
    """Why lead REF holds its requests: for each, the leads it was weighed against, the evidence (email, phone,
    last name, first name, device, time gap), the score and the verdict; then near misses, other leads' requests
    kept apart from it. Names, phones and emails are masked unless --show."""
    settings = command_settings()
    open_store(settings)
    with session_scope() as session:
        try:
            lines = explain(session, ref, settings, show=show)
        except UnknownLead as missing:
            raise click.ClickException(str(missing)) from None
        if show:
            audit.operator_did(session, audit.AuditAction.READ, lead_ref=ref.strip().upper(),
                               detail="dedup evidence shown with names, phones and emails")
    click.echo("\n".join(lines))


@leads.command("merge")
@click.argument("keep")
@click.argument("other")
def leads_merge(keep: str, other: str) -> None:
    """Merge lead OTHER into lead KEEP: one person dedup kept apart. The CRM records follow; staff are not texted."""
    _correct(lambda session: merge_by_hand(session, keep, other))


@leads.command("split")
@click.argument("ref")
@click.option("--submission", "submission_id", type=int, required=True, help="The request to move out (an id).")
def leads_split(ref: str, submission_id: int) -> None:
    """Move one request out of lead REF into a lead of its own: someone else dedup joined. Dedup never merges the
    two again; the CRM follows; staff are not texted (the new lead's callback task is in the CRM)."""
    settings = command_settings()
    _correct(lambda session: split_by_hand(session, ref, submission_id, settings))


def _correct(change: Callable[[Session], Correction]) -> None:
    settings = command_settings()
    open_store(settings)
    with session_scope() as session:
        try:
            done = change(session)
        except CorrectionError as refused:
            raise click.ClickException(str(refused)) from None
    if done.outbox_ids:
        dispatcher_for(settings, default_services()).outbox_ready(done.outbox_ids)
    click.echo(done.summary)


@click.group()
def submissions() -> None:
    """Stored submissions (no PHI is printed unless --reveal)."""


@submissions.command("list")
@click.option("--state", type=click.Choice([s.value for s in SubmissionState]), default=None)
def submissions_list(state: str | None) -> None:
    """One line per submission: id, site, form, entry, source, state, lead, flag reason (nothing encrypted is read)."""
    settings = command_settings()
    open_store(settings)
    with session_scope() as session:
        query = (
            select(Submission.id, Submission.site, Submission.form_id, Submission.entry_id, Submission.source,
                   Submission.state, Lead.ref, Submission.flag_reason)
            .outerjoin(Lead, Lead.id == Submission.lead_id).order_by(Submission.id)
        )
        if state:
            query = query.where(Submission.state == state)
        print_table(("ID", "SITE", "FORM", "ENTRY", "SOURCE", "STATE", "LEAD", "FLAG REASON"),
                    session.execute(query), empty=f"no {state} submissions" if state else "no submissions")


@submissions.command("show")
@click.argument("submission_id", type=int)
@click.option("--reveal", is_flag=True, help="Also print the entry as received (PHI).")
def submissions_show(submission_id: int, reveal: bool) -> None:
    """One submission's record; with --reveal, its raw entry (PHI: only on a screen you may show it on)."""
    settings = command_settings()
    open_store(settings)
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

@submissions.command("release")
@click.argument("submission_id", type=int)
def submissions_release(submission_id: int) -> None:
    """Process a flagged submission as a person after all (an operator's decision), and say how it ended.

    Release overrides the screen for automated-looking entries and Gravity Forms' spam mark; an entry with no valid
    phone or email, or of an unregistered form, is flagged again, with the reason.
    """
    settings = command_settings()
    open_store(settings)
    with session_scope() as session:
        sub = session.get(Submission, submission_id)
        if sub is None:
            raise click.ClickException(f"no submission {submission_id}")
        if sub.state not in (SubmissionState.FLAGGED, SubmissionState.SPAM):
            raise click.ClickException(f"submission {submission_id} is {sub.state}, not flagged or spam")
        was = sub.state
        audit.operator_did(session, audit.AuditAction.RELEASE, submission_id=sub.id, detail=f"from {was}")
        sub.state, sub.flag_reason, sub.released = SubmissionState.RECEIVED, None, True
        session.flush()
        # Processed in the same transaction, so no sweeper or worker can take it in between.
        outcome = process_submission(session, submission_id, settings)
        session.flush()
        ended, reason, lead = sub.state, sub.flag_reason, sub.lead.ref if sub.lead else None
    dispatcher_for(settings, default_services()).outbox_ready(outcome.outbox_ids)
    if ended == SubmissionState.PROCESSED:
        joined = "a new lead" if outcome.new_lead else "an existing lead (a repeat request)"
        click.echo(f"submission {submission_id} released from {was}: processed as {joined}, {lead}; "
                   f"{len(outcome.outbox_ids)} deliveries handed on (CRM sync, staff alert)")
        return
    click.echo(f"submission {submission_id} released from {was}, but it is {ended} again: "
               f"{reason or 'no reason given'}")
    sys.exit(1)

"""The outbox by hand: list rows, retry one now, drop one."""

from __future__ import annotations

from collections.abc import Callable

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.settings import Settings
from worker.cli.common import command_settings, open_store, print_table
from worker.delivery import outbox as outbox_rows
from worker.delivery.dispatch import dispatcher_for
from worker.staff.services import default_services
from worker.store.db import session_scope
from worker.store.models import Lead, OutboxMessage, OutboxState
from worker.trust import audit


@click.group()
def outbox() -> None:
    """Pending, delivered and dead CRM syncs and staff alerts."""


def _operator_outbox_change(
    outbox_id: int, change: Callable[[Session, int], object], action: audit.AuditAction
) -> Settings:
    """Apply an operator's change to one outbox row and audit it; a row it cannot apply to is a clean error."""
    settings = command_settings()
    open_store(settings)
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
    """One line per outbox row: id, kind, lead, state, attempts (those in a row without progress), next attempt,
    a create still waiting for its answer, and the last error (for a dead row, why it is dead)."""
    settings = command_settings()
    open_store(settings)
    with session_scope() as session:
        query = select(OutboxMessage, Lead.ref).join(Lead, Lead.id == OutboxMessage.lead_id).order_by(OutboxMessage.id)
        if state:
            query = query.where(OutboxMessage.state == state)
        print_table(
            ("ID", "KIND", "LEAD", "STATE", "ATTEMPTS", "WITHOUT PROGRESS", "NEXT ATTEMPT", "UNANSWERED", "LAST ERROR"),
            ((row.id, row.kind, ref, row.state, row.attempts, row.fruitless,
              row.next_attempt_at.isoformat(timespec="seconds"), row.unanswered, row.last_error)
             for row, ref in session.execute(query)),
            empty=f"no {state} outbox rows" if state else "no outbox rows",
        )
        totals = dict(session.execute(select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)).all())
        click.echo(", ".join(f"{key} {value}" for key, value in sorted(totals.items())) or "outbox is empty",
                   err=True)

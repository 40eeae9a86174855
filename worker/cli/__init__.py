"""The terminal door: the `admitflow` command, one module per command group.

`run` starts the stack, `health` checks it (health checks, `doctor`), `forms` registers and shows forms, `intake`
brings entries in by hand, `leads` looks at leads and submissions, `delivery` works the outbox, `staff` shows the
roster, `trust` keeps the audit trail, retention and keys, `ops` reports.
Commands call the workflows in the rooms below; none holds business logic of its own.
"""

from __future__ import annotations

import click

from worker.cli import delivery, forms, health, intake, leads, ops, run, staff, trust
from worker.cli.common import AdmitflowGroup


@click.group(cls=AdmitflowGroup)
def main() -> None:
    """admitflow: Gravity Forms submissions to CRM leads and admissions staff alerts."""


for command in (
    run.migrate, run.web, run.worker, run.beat,
    health.health, health.doctor,
    forms.forms, intake.ingest, intake.poll, intake.backfill,
    leads.leads, leads.submissions,
    delivery.outbox,
    staff.roster,
    trust.audit_command, trust.purge, trust.keys,
    ops.report,
):
    main.add_command(command)

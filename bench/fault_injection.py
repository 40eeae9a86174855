"""Fault injection at scale: the scenarios of tests/integration/test_faults.py with more submissions and a longer
PostgreSQL outage, and the vendors' faults (tests/support/vendor_scenarios.py: every create losing its answer at a
search lag of 0, 5 and 30 s; the HubSpot storm one lead per call and batched), each on a private Redis and
PostgreSQL (never the shared ones), printing one row per scenario.

    python bench/fault_injection.py [--submissions 500] [--rate 20] [--postgres-outage 30] [--only redis_wiped]

Needs redis-server and PostgreSQL's initdb/pg_ctl installed; as root, PostgreSQL runs as the `postgres` user.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quiet import watched
from tests.support.fault_scenarios import SCENARIOS, Outcome, Scale, run_scenario
from tests.support.private_services import private_services

COLUMNS = ("scenario", "submitted", "leads", "CRM contacts", "CRM tasks", "staff alerts", "lost", "doubled",
           "dead rows", "seconds", "what the fault did")


def row(outcome: Outcome) -> list[str]:
    tally = outcome.tally
    lost = f"{outcome.lost}" + (f" {dict(tally.lost)}" if outcome.lost else "")
    doubled = f"{outcome.doubled}" + (f" {dict(tally.doubled)}" if outcome.doubled else "")
    if tally.unrecorded_texts:
        doubled += f" ({tally.unrecorded_texts} unrecorded texts)"
    facts = ", ".join(f"{name} {value}" for name, value in outcome.facts.items())
    return [outcome.scenario, str(tally.submitted), str(tally.leads), str(tally.contacts), str(tally.tasks),
            str(tally.alerts), lost, doubled, str(tally.lost["dead outbox rows"]), f"{outcome.seconds:.0f}", facts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="submissions per second")
    parser.add_argument("--postgres-outage", type=float, default=30.0, help="seconds PostgreSQL stays stopped")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    args = parser.parse_args()
    scale = Scale(submissions=args.submissions, rate=args.rate, postgres_outage_seconds=args.postgres_outage,
                  worker_kills=8, deploys=8, slow_entries=24, settle_seconds=600 + args.submissions * 2)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    failed = False
    with watched() as watch, private_services() as services, \
            tempfile.TemporaryDirectory(prefix="admitflow-fault-bench-") as work:
        for name in args.only or list(SCENARIOS):
            outcome = run_scenario(name, services, Path(work), scale)
            print("| " + " | ".join(row(outcome)) + " |", flush=True)
            if outcome.lost > 0 or outcome.doubled > 0:
                failed = True
                kept = Path(tempfile.mkdtemp(prefix=f"admitflow-fault-{name}-"))
                for log in (Path(work) / name).glob("*.log"):
                    shutil.copy(log, kept)
                print(f"  {name}: its processes' logs (why each dead row died) kept in {kept}", flush=True)
    print(watch.verdict())  # the counts hold whatever the load; the seconds do not
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

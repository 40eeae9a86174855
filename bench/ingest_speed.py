"""`admitflow ingest` against `admitflow backfill`, in one run: entries per second, and the ratio.

    python bench/ingest_speed.py [--entries 10000] [--runs 2]

Each measurement starts from a fresh PostgreSQL database (BENCH_POSTGRES_URL's database, dropped and made anew) with
the example form registered, and imports the same history of `--entries` entries, as each command does it in one
process without a broker: backfill reads the pages from an in-memory Gravity Forms API
(`worker.intake.backfill.import_page`) and hands each page to the inline dispatcher; ingest is the `admitflow ingest`
command itself, reading a JSON file of the same entries. Both then process each page in one transaction and deliver
its CRM syncs and staff alerts inline, to the log-only CRM and messenger (no provider is configured: nothing leaves
the machine). The entries are recent, so both text staff about every new lead. With --no-delivery both leave the
outbox rows pending, as they would for a broker's workers, and measure storing and processing only (what
bench/backfill_scale.py measures).

The history: 95% new people, 5% people of this history who wrote again with their phone written another way. Every
phone is a 555-01xx-style fictional number, every address at example.org. The two commands alternate, backfill
first; the load average before and after is printed, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from click.testing import CliRunner

from bench.quiet import watched
from bench.stack import KEYS, POSTGRES_URL, recreate_database
from config.settings import get_settings
from tests.fakes.gravityforms import InMemoryGravityForms
from worker.cli import main as admitflow
from worker.delivery.dispatch import HistoryPages, InlineDispatcher
from worker.intake import backfill
from worker.intake.entries import register_form
from worker.staff.services import default_services
from worker.store.db import dispose_engines, session_scope
from worker.store.schema import upgrade

REPO = Path(__file__).resolve().parents[1]
FORM = REPO / "examples/gravityforms/form.json"
FIRST_NAMES = ["Avery", "Blair", "Casey", "Devon", "Emery", "Finley", "Harper", "Jules", "Kendall", "Logan",
               "Morgan", "Parker", "Quinn", "Reese", "Rowan", "Sawyer", "Taylor", "Jordan", "Skyler", "Hayden"]
AREA_CODES = [212, 213, 305, 312, 415, 503, 602, 617, 702, 713, 808, 917]
# Inline delivery commits a few times per outbox row; on a shared disk each commit's flush dominates. Without
# --synchronous-commit the bench database does not wait for it (both commands alike; nothing else changes).
SYNCHRONOUS_COMMIT = "--synchronous-commit" in sys.argv


def history(count: int, now: datetime) -> list[dict[str, Any]]:
    """`count` entries of the example form, oldest first, in the last hour; 5% are a person writing again."""
    entries = []
    for n in range(count):
        person = n - 7 if n % 20 == 19 else n
        area, line = AREA_CODES[person // 10_000], person % 10_000
        phone = f"({area}) 555-{line:04d}" if person == n else f"{area}.555.{line:04d}"
        entries.append({
            "id": str(500_000 + n), "form_id": "1", "status": "active",
            "date_created": (now - timedelta(seconds=count - n)).strftime("%Y-%m-%d %H:%M:%S"),
            "ip": f"198.51.100.{person % 250}", "user_agent": f"Mozilla/5.0 (bench {person})",
            "source_url": "https://clinic.example.org/contact/?utm_source=bench",
            "1.3": FIRST_NAMES[person % len(FIRST_NAMES)], "1.6": "Example",
            "2": f"person{person}@example.org", "3": phone,
            "4": "I would like to talk to someone about treatment options.", "5.1": "1", "6.1": "Yes",
        })
    return entries


def fresh_database() -> dict[str, Any]:
    """The bench database anew, migrated, with the example form registered; returns the form object."""
    dispose_engines()
    get_settings.cache_clear()
    default_services.cache_clear()
    recreate_database(POSTGRES_URL)
    if not SYNCHRONOUS_COMMIT:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        engine = create_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{make_url(POSTGRES_URL).database}" SET synchronous_commit = off'))
        engine.dispose()
    settings = get_settings()
    upgrade(settings)
    form: dict[str, Any] = json.loads(FORM.read_text(encoding="utf-8"))
    with session_scope() as session:
        register_form(session, site=settings.site, form_object=form)
    return form


def run_backfill(entries: list[dict[str, Any]]) -> tuple[float, float]:
    """What `admitflow backfill --form 1 --since ...` does without a broker; the seconds it took and this process's
    CPU seconds."""
    form = fresh_database()
    client = InMemoryGravityForms(form, entries)
    dispatcher = InlineDispatcher(default_services())
    started, cpu_started = time.perf_counter(), time.process_time()
    with session_scope() as session, HistoryPages.to(dispatcher) as history:
        run = backfill.start(session, site=get_settings().site, form_id="1", since=datetime(2020, 1, 1, tzinfo=UTC))
        while True:
            page = backfill.import_page(session, run, client)
            history.add(page.stored_ids)
            if page.finished:
                break
    return time.perf_counter() - started, time.process_time() - cpu_started


def run_ingest(entries_file: Path) -> tuple[float, float, str]:
    """`admitflow ingest --form examples/gravityforms/form.json ENTRIES` in this process; seconds, CPU seconds and
    its summary."""
    fresh_database()
    started, cpu_started = time.perf_counter(), time.process_time()
    result = CliRunner().invoke(admitflow, ["ingest", "--form", str(FORM), str(entries_file)])
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if result.exit_code != 0:
        raise SystemExit(f"admitflow ingest failed: {result.output[-2000:]}")
    return seconds, cpu_seconds, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2, help="measurements of each command, alternating")
    parser.add_argument("--no-delivery", action="store_true",
                        help="leave outbox rows pending (both commands): measure storing and processing only")
    parser.add_argument("--synchronous-commit", action="store_true",
                        help="let each commit wait for its WAL flush, as production does (slow on a shared disk)")
    args = parser.parse_args()
    if not 1 <= args.entries <= len(AREA_CODES) * 10_000:
        parser.error(f"--entries must be between 1 and {len(AREA_CODES) * 10_000}")
    os.environ.update(KEYS, DATABASE_URL=POSTGRES_URL, CELERY_BROKER_URL="", SITES_FILE="",
                      ADMITFLOW_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"))
    for name in [name for name in os.environ if name.startswith(("GRAVITYFORMS_", "HUBSPOT_", "TWILIO_",
                                                                   "SALESFORCE_"))]:
        del os.environ[name]
    if args.no_delivery:
        import worker.cli.intake

        def pending(*_: Any, **__: Any) -> Any:
            from worker.delivery.outbox import Delivery

            return Delivery(None)

        worker.cli.intake.deliver = pending  # type: ignore[assignment]
        InlineDispatcher.outbox_ready = lambda self, outbox_ids: None  # type: ignore[method-assign]
    entries = history(args.entries, datetime.now(UTC))
    rates: dict[str, list[float]] = {"backfill": [], "ingest": []}
    cpu_ms: dict[str, list[float]] = {"backfill": [], "ingest": []}  # this process's CPU per entry
    summary = ""
    with watched() as watch, tempfile.TemporaryDirectory() as folder:
        entries_file = Path(folder) / "entries.json"
        entries_file.write_text(json.dumps(entries), encoding="utf-8")
        for run in range(1, args.runs + 1):
            seconds, cpu_seconds = run_backfill(entries)
            rates["backfill"].append(args.entries / seconds)
            cpu_ms["backfill"].append(cpu_seconds / args.entries * 1000)
            print(f"run {run}: backfill {args.entries / seconds:.0f} entries/s", file=sys.stderr, flush=True)
            seconds, cpu_seconds, summary = run_ingest(entries_file)
            rates["ingest"].append(args.entries / seconds)
            cpu_ms["ingest"].append(cpu_seconds / args.entries * 1000)
            print(f"run {run}: ingest {args.entries / seconds:.0f} entries/s", file=sys.stderr, flush=True)
    measured = ("storing and processing; delivery left to workers" if args.no_delivery
                else "processing and inline delivery to the log-only CRM and messenger")
    print(f"{'command':<9} {'entries':>7} " + " ".join(f"{'run ' + str(n):>7}" for n in range(1, args.runs + 1))
          + f" {'median':>7} {'cpu ms':>6}  (entries/s, {measured}; cpu ms: this process's CPU per entry, median)")
    for command, values in rates.items():
        print(f"{command:<9} {args.entries:>7} " + " ".join(f"{value:>7.0f}" for value in values)
              + f" {statistics.median(values):>7.0f} {statistics.median(cpu_ms[command]):>6.2f}")
    ratio = statistics.median(rates["ingest"]) / statistics.median(rates["backfill"])
    print(f"ingest / backfill = {ratio:.2f} (target >= 0.80); synchronous_commit "
          f"{'on' if args.synchronous_commit else 'off'}; ingest said: {summary}")
    print(watch.verdict())


if __name__ == "__main__":
    main()

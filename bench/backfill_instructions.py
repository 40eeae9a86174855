"""Instructions per entry of a backfill's processing, admitflow beside its reference, counted by valgrind.

    python bench/backfill_instructions.py [--entries 2000] [--leads 10000] [--page-size 200]

Seconds on a shared machine drift by a third from one minute to the next; instructions do not. Each side runs in
its own process under `valgrind --tool=callgrind` with counting off: the bench database is made anew with
`--leads` leads (as bench/backfill_scale.py seeds them), a history of `--entries` entries is stored, one page is
processed to warm up, and only then is counting turned on (`callgrind_control -i on`), for the processing of the
rest and the process's exit: 200 entries a transaction as `admitflow backfill` hands them on (`--page-size 10` is
about what a live page holds at 50 entries/s), in this one process. PostgreSQL's own work is not counted. The
reference is bench/backfill_reference.py: the least a correct backfill could do on the same tables. Needs valgrind
(with callgrind_control) on the PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import backfill_reference, backfill_scale
from integrations.gravityforms.client import PAGE_SIZE
from worker.delivery.dispatch import HISTORY_PAGE_SIZE

WARM_UP = HISTORY_PAGE_SIZE


def stored_history(reference: bool, entries: int, leads: int) -> list[int]:
    """A bench database with `leads` leads and a history of WARM_UP + `entries` entries stored, not processed: their
    submission ids, in order."""
    form, site = backfill_scale.prepare()
    now = datetime.now(UTC)
    backfill_scale.seed(0, leads, now, backfill_scale.Ciphertexts.make(), site)
    history = backfill_scale.history(0, WARM_UP + entries, leads, now)
    if reference:
        import psycopg

        with psycopg.connect(backfill_scale.copy_url()) as connection:
            return [submission_id for start in range(0, len(history), PAGE_SIZE) for submission_id in
                    backfill_reference.store_page(connection, site, history[start:start + PAGE_SIZE])]
    from tests.fakes.gravityforms import InMemoryGravityForms
    from worker.intake import backfill
    from worker.store.db import session_scope

    client, ids = InMemoryGravityForms(form, history), []
    with session_scope() as session:
        run = backfill.start(session, site=site, form_id="1", since=datetime(2020, 1, 1, tzinfo=UTC))
        while True:
            page = backfill.import_page(session, run, client)
            ids.extend(page.stored_ids)
            if page.finished:
                return ids


def process(reference: bool, submission_ids: list[int]) -> None:
    (backfill_scale.reference_page if reference else backfill_scale.process_page)(submission_ids)


def side(reference: bool, entries: int, leads: int, go: Path, page_size: int) -> None:
    """The process valgrind runs: store, warm up, wait for counting to be on, process."""
    ids = stored_history(reference, entries, leads)
    process(reference, ids[:WARM_UP])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.05)
    for start in range(WARM_UP, len(ids), page_size):
        process(reference, ids[start:start + page_size])
    print("done", flush=True)


def count(reference: bool, entries: int, leads: int, page_size: int) -> int:
    """Instructions the side's process executed while processing the measured entries."""
    with tempfile.TemporaryDirectory() as scratch:
        out, go = Path(scratch) / "callgrind.out", Path(scratch) / "go"
        process_ = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--side", "reference" if reference else "admitflow",
             "--entries", str(entries), "--leads", str(leads), "--page-size", str(page_size), "--go", str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert process_.stdout is not None
        if process_.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {'reference' if reference else 'admitflow'} side failed before processing")
        subprocess.run(["callgrind_control", "-i", "on", str(process_.pid)], check=True, capture_output=True)
        go.touch()
        if process_.stdout.readline().strip() != "done":
            raise SystemExit("processing failed under valgrind")
        process_.wait()
        summary = re.search(r"^summary:\s+(\d+)", out.read_text(encoding="utf-8"), re.MULTILINE)
        if summary is None:
            raise SystemExit(f"no instruction count in {out}")
        return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=HISTORY_PAGE_SIZE,
                        help="entries a transaction (a live page at 50 entries/s holds about 10)")
    parser.add_argument("--side", choices=["admitflow", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--go", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args.side == "reference", args.entries, args.leads, args.go, args.page_size)
        return
    os.environ.setdefault("BENCH_LOG_LEVEL", "WARNING")
    counted = {name: count(name == "reference", args.entries, args.leads, args.page_size)
               for name in ("admitflow", "reference")}
    for name, instructions in counted.items():
        print(f"{name:>10}: {instructions / args.entries / 1e6:.2f} million instructions per entry "
              f"({args.entries} entries, {args.page_size} a transaction, {args.leads} leads stored)")
    print(f"admitflow / reference: {counted['admitflow'] / counted['reference']:.2f}")


if __name__ == "__main__":
    main()

"""Backfill throughput with dedup against 10k, 100k and 1M leads already in PostgreSQL.

    python bench/backfill_scale.py [--sizes 10000,100000,1000000] [--entries 10000] [--runs 2]

For each size, leads already in the database are topped up to that many (bulk COPY: every lead with its phone,
email and device blind indexes, their lock rows in `lead_keys`, one processed submission and two delivered
outbox rows), then a history of `--entries` new entries is imported through the real path of `admitflow
backfill`: `worker.intake.backfill.import_page` page by page from an in-memory Gravity Forms API, and each stored entry
processed (screening, dedup under its locks, lead, outbox rows) in its own transaction as the backfill's
dispatcher does. Delivery to the CRM and staff is not measured: it is bounded by the providers' rate limits.
After each run its rows are deleted, so every run of a size starts with the same leads. Each history is imported
twice, by admitflow and by the reference (bench/backfill_reference.py: the least a correct backfill could do, on
the same tables, with the same pages and worker processes), which going first alternating, and the ratio of their
rates is printed: what this machine allows, beside what admitflow makes of it.

The history: 80% new people, 15% earlier leads coming back with their phone or email written another way,
5% people of this history who wrote twice. Every phone is a 555 number, every address at example.org.

The database named as BENCH_POSTGRES_URL's with `_backfill` added (`admitflow_bench_backfill` by default), on its
server, is dropped and made anew.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import phonenumbers
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from bench import backfill_reference
from bench.quiet import watched
from bench.stack import KEYS, POSTGRES_URL, letters, recreate_database
from config.settings import get_settings
from config.sites import load_sites
from integrations.gravityforms.client import PAGE_SIZE
from tests.fakes.gravityforms import InMemoryGravityForms
from worker.delivery.dispatch import HistoryPages, process_stored
from worker.intake import backfill
from worker.intake.entries import register_form
from worker.leads.processing import Outcome
from worker.store.db import dispose_engines, session_scope
from worker.store.phi import current_vault
from worker.store.schema import upgrade

# BENCH_POSTGRES_URL's database name with "_backfill": two benches on one server keep apart.
DATABASE_URL = make_url(POSTGRES_URL).set(
    database=f"{make_url(POSTGRES_URL).database}_backfill").render_as_string(hide_password=False)
REPO = Path(__file__).resolve().parents[1]
FORM = REPO / "examples/gravityforms/form.json"
FIRST_NAMES = ["Avery", "Blair", "Casey", "Devon", "Emery", "Finley", "Harper", "Jules", "Kendall", "Logan",
               "Morgan", "Parker", "Quinn", "Reese", "Rowan", "Sawyer", "Taylor", "Jordan", "Skyler", "Hayden"]
LAST_NAMES = ["Sample", "Example", "Tester", "Placeholder", "Fictional", "Madeup", "Dummy", "Specimen"]
AGENT = "Mozilla/5.0 (bench)"
NEW_PEOPLE_FROM = 1_100_000  # person numbers of the histories; the leads already stored are 0 .. size-1
SEED_CHUNK = 50_000
BIG_TABLES = ("leads", "lead_keys", "submissions", "outbox")


def _area_codes() -> list[int]:
    found = []
    for code in range(201, 990):
        number = phonenumbers.parse(f"+1{code}5550100")
        if phonenumbers.is_valid_number(number) and phonenumbers.region_code_for_number(number) == "US":
            found.append(code)
    return found


AREA_CODES = _area_codes()


def phone_of(person: int) -> str:
    """The person's phone, normalized (E.164): a 555 number in one of the US area codes."""
    return f"+1{AREA_CODES[person // 10_000]}555{person % 10_000:04d}"


def written_phone(person: int, style: int) -> str:
    digits = phone_of(person)[2:]
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    return [f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}", f"+1 {area} {exchange} {line}",
            f"{area}.{exchange}.{line}", f"1{area}{exchange}{line}"][style % 5]


def email_of(person: int) -> str:
    return f"person{person}@example.org"


def first_name_of(person: int) -> str:
    return FIRST_NAMES[person % len(FIRST_NAMES)]


def last_name_of(person: int) -> str:
    return LAST_NAMES[person % len(LAST_NAMES)]


def requested_at(person: int, now: datetime) -> datetime:
    """When an earlier lead asked, spread over the last year: a deterministic function of the person."""
    fraction = int.from_bytes(hashlib.blake2b(person.to_bytes(8, "big"), digest_size=4).digest(), "big") / 2**32
    return now - timedelta(days=2) - timedelta(days=360) * fraction


# --- the leads already stored -------------------------------------------------------------------------------


def copy_url() -> str:
    return make_url(DATABASE_URL).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class Ciphertexts:
    """A few encrypted values reused across rows: the blind indexes are what dedup reads, and those are per row."""

    first: list[str]
    last: list[str]
    known_first: list[str]
    phone: str
    email: str
    payload: str

    @classmethod
    def make(cls) -> Ciphertexts:
        vault = current_vault()
        payload = ('{"id":"1","form_id":"1","date_created":"2026-01-05 10:00:00","status":"active","1.3":"Jordan",'
                   '"1.6":"Sample","2":"person1@example.org","3":"(212) 555-0101","4":"I would like to talk to '
                   'someone about treatment options.","5.1":"1","ip":"2001:db8::1","user_agent":"Mozilla/5.0"}')
        return cls(
            first=[vault.encrypt(name) for name in FIRST_NAMES],
            last=[vault.encrypt(name) for name in LAST_NAMES],
            known_first=[vault.encrypt(f'["{name}"]') for name in FIRST_NAMES],
            phone=vault.encrypt("+12125550101"), email=vault.encrypt("person1@example.org"),
            payload=vault.encrypt(payload),
        )


def seed_rows(first: int, last: int, now: datetime, ciphertexts: Ciphertexts, site: str) -> dict[str, list[str]]:
    """COPY text rows for the leads numbered [first, last): what processing each one's submission left behind."""
    vault = current_vault()
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    rows: dict[str, list[str]] = {table: [] for table in BIG_TABLES}
    for person in range(first, last):
        lead_id = person + 1
        # An odd multiplier modulo 32**5 is a bijection: every lead its own scattered reference.
        ref_number, ref = (person * 0x5DEECE6D + 12345) % 32**5, ""
        for _ in range(5):
            ref_number, digit = divmod(ref_number, 32)
            ref += alphabet[digit]
        phone = vault.blind_index("phone", phone_of(person))
        email = vault.blind_index("email", email_of(person))
        device = vault.blind_index("device", f"2001:db8::{person:x}|{AGENT}")
        at = requested_at(person, now).isoformat()
        name = person % len(FIRST_NAMES)
        rows["leads"].append(
            f"{lead_id}\tR-{ref}\t{ciphertexts.first[name]}\t{ciphertexts.last[person % len(LAST_NAMES)]}\t"
            f"{ciphertexts.phone}\t{ciphertexts.email}\t{phone}\t{email}\tt\tt\t{ciphertexts.known_first[name]}\t"
            f"\\N\tnormal\tclaimed\t0\t{at}\t{at}\tc{lead_id}\tt{lead_id}\t\\N\n"
        )
        rows["lead_keys"].extend((f"phone\t{phone}\n", f"email\t{email}\n", f"device\t{device}\n"))
        rows["submissions"].append(
            f"{lead_id}\t{site}\t1\t{lead_id}\twebhook\t{at}\t{ciphertexts.payload}\tprocessed\t\\N\t{at}\tf\t"
            f"{device}\t{at}\tf\t{lead_id}\tn{lead_id}\n"
        )
        rows["outbox"].extend(
            f"{2 * lead_id - kind_number}\t{kind}\t{lead_id}\t{lead_id}\tdelivered\t1\t{at}\t\\N\t\\N\t{at}\t{at}\n"
            for kind_number, kind in ((1, "crm_sync"), (0, "staff_alert"))
        )
    return rows


COLUMNS = {
    "leads": "id, ref, first_name, last_name, phone, email, phone_index, email_index, consent_to_text, consent, "
             "known_first_names, merged_into_id, priority, status, repeat_count, created_at, last_request_at, "
             "crm_contact_id, crm_task_id, crm_lease_until",
    "lead_keys": "kind, digest",
    "submissions": "id, site, form_id, entry_id, source, received_at, payload, state, flag_reason, processed_at, "
                   "is_repeat, device_index, requested_at, released, lead_id, crm_note_id",
    "outbox": "id, kind, lead_id, submission_id, state, attempts, next_attempt_at, leased_until, last_error, "
              "created_at, delivered_at",
}


def seed(first: int, last: int, now: datetime, ciphertexts: Ciphertexts, site: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(copy_url(), autocommit=False) as connection:
        for chunk in range(first, last, SEED_CHUNK):
            rows = seed_rows(chunk, min(chunk + SEED_CHUNK, last), now, ciphertexts, site)
            for table in BIG_TABLES:
                with connection.cursor().copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
                    for start in range(0, len(rows[table]), 5000):
                        copy.write("".join(rows[table][start:start + 5000]))
            connection.commit()
        for table in ("leads", "submissions", "outbox"):
            connection.execute(sql.SQL("SELECT setval(%s, (SELECT max(id) FROM {}))").format(sql.Identifier(table)),
                               (f"{table}_id_seq",))
        connection.commit()
    settle()
    return time.perf_counter() - started


def settle() -> None:
    """Vacuum and analyse the big tables, then write every dirty page out: a run starts on tables as a running
    system keeps them, and does not pay for the checkpoint that seeding (gigabytes of WAL at 1M leads) or the last
    run's cleanup left under way."""
    with psycopg.connect(copy_url(), autocommit=True) as connection:
        connection.execute(f"VACUUM ANALYZE {', '.join(BIG_TABLES)}")
        connection.execute("CHECKPOINT")


# --- the history a backfill imports -------------------------------------------------------------------------


def history(run: int, count: int, existing: int, now: datetime) -> list[dict[str, Any]]:
    """`count` entries, oldest first, of the mix described above."""
    rng = random.Random(run)
    people: list[tuple[datetime, int]] = []
    entries: list[tuple[datetime, dict[str, Any]]] = []
    for number in range(count):
        draw = rng.random()
        device = f"2001:db8:{run + 1:x}::{number:x}"
        if draw < 0.80 or (draw >= 0.95 and not people):
            person = NEW_PEOPLE_FROM + run * count + number
            at = now - timedelta(days=2) - timedelta(days=360) * rng.random()
            people.append((at, person))
            entries.append((at, _entry(person, at, device, phone_style=number, email=email_of(person))))
        elif draw < 0.95:
            person = rng.randrange(existing)
            at = min(requested_at(person, now) + timedelta(days=20) * rng.random(), now - timedelta(days=1))
            style = rng.randrange(10)
            # 7 in 10 write both again, 2 a new address with the phone, 1 the address alone.
            email = f"other{run}x{number}@example.org" if style in (7, 8) else email_of(person).upper()
            phone = None if style == 9 else written_phone(person, style)
            entries.append((at, _entry(person, at, device, phone_style=style, email=email, phone=phone)))
        else:
            earlier, person = rng.choice(people)
            at = earlier + timedelta(minutes=10) + timedelta(days=10) * rng.random()
            entries.append((at, _entry(person, at, device, phone_style=number + 1, email=f" {email_of(person)} ")))
    entries.sort(key=lambda pair: pair[0])
    for entry_id, (_, entry) in enumerate(entries, start=50_000_000 + run * count):
        entry["id"] = str(entry_id)
    return [entry for _, entry in entries]


def _entry(person: int, at: datetime, ip: str, *, phone_style: int, email: str,
           phone: str | None = "") -> dict[str, Any]:
    entry = {
        "form_id": "1", "date_created": at.strftime("%Y-%m-%d %H:%M:%S"), "status": "active",
        "ip": ip, "user_agent": AGENT, "1.3": first_name_of(person), "1.6": last_name_of(person) + letters(person),
        "2": email, "3": written_phone(person, phone_style) if phone == "" else phone,
        "4": "I would like to talk to someone about treatment options.", "5.1": "1",
    }
    return {key: value for key, value in entry.items() if value is not None}


@dataclass
class Measured:
    existing: int
    entries: int
    seconds: float
    store_seconds: float
    cpu_seconds: float  # this process's CPU time: the Python side of the cost, whatever else the machine runs
    new_leads: int
    joined: int
    seq_scans: int
    reference_rate: float = 0.0  # the reference's, importing the same history in the same run

    @property
    def rate(self) -> float:
        return self.entries / self.seconds


def seq_scans() -> int:
    with psycopg.connect(copy_url(), autocommit=True) as connection:
        connection.execute("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(
            "SELECT sum(seq_scan) FROM pg_stat_user_tables WHERE relname = ANY(%s)", (list(BIG_TABLES),)
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def process_page(submission_ids: list[int]) -> list[Outcome]:
    """One page, in a worker process of the pool, as a worker of `admitflow backfill --enqueue` does it."""
    return process_stored(submission_ids, get_settings())


def reference_page(submission_ids: list[int]) -> tuple[int, int]:
    return backfill_reference.process_page(copy_url(), submission_ids)


def measure_reference(entries: list[dict[str, Any]], existing: int, site: str, pool: Pool | None) -> Measured:
    """The same history through the reference (bench/backfill_reference.py), stored here and processed in the pool
    as admitflow's pages are."""
    counts: list[tuple[int, int]] = []
    handed: list[AsyncResult[tuple[int, int]]] = []
    store_seconds = 0.0

    def hand_on(submission_ids: list[int]) -> None:
        if pool is None:
            counts.append(reference_page(submission_ids))
        else:
            handed.append(pool.apply_async(reference_page, (submission_ids,)))

    started, cpu_started = time.perf_counter(), time.process_time()
    with psycopg.connect(copy_url(), autocommit=False) as connection, HistoryPages(hand_on) as history:
        for start in range(0, len(entries), PAGE_SIZE):
            stored_at = time.perf_counter()
            ids = backfill_reference.store_page(connection, site, entries[start:start + PAGE_SIZE])
            store_seconds += time.perf_counter() - stored_at
            history.add(ids)
    counts.extend(result.get() for result in handed)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return Measured(existing, len(entries), seconds, store_seconds, cpu_seconds, sum(new for new, _ in counts),
                    sum(joined for _, joined in counts), 0)


def measure(run: int, entries: list[dict[str, Any]], form: dict[str, Any], existing: int, site: str,
            pool: Pool | None) -> Measured:
    settings = get_settings()
    client = InMemoryGravityForms(form, entries)
    since = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=run)
    outcomes: list[Outcome] = []
    handed: list[AsyncResult[list[Outcome]]] = []
    store_seconds = 0.0
    scans_before = seq_scans()

    def hand_on(submission_ids: list[int]) -> None:
        if pool is None:
            outcomes.extend(process_stored(submission_ids, settings))
        else:
            handed.append(pool.apply_async(process_page, (submission_ids,)))

    started, cpu_started = time.perf_counter(), time.process_time()
    with session_scope() as session, HistoryPages(hand_on) as history:
        backfill_run = backfill.start(session, site=site, form_id="1", since=since)
        while True:
            stored_at = time.perf_counter()
            page = backfill.import_page(session, backfill_run, client)
            store_seconds += time.perf_counter() - stored_at
            history.add(page.stored_ids)
            if page.finished:
                break
    for result in handed:
        outcomes.extend(result.get())
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    time.sleep(0.6)  # the statistics collector reports with a short delay
    scans = seq_scans() - scans_before
    return Measured(existing, len(entries), seconds, store_seconds, cpu_seconds, sum(o.new_lead for o in outcomes),
                    sum(o.lead_id is not None and not o.new_lead for o in outcomes), scans)


def remove_run(watermarks: dict[str, int], lock_rows_from: int) -> None:
    """Delete what a run added, so the next run of the size starts from the same leads."""
    with psycopg.connect(copy_url(), autocommit=False) as connection:
        connection.execute("SET session_replication_role = replica")  # skip FK checks: the run's rows go together
        for table in ("outbox", "submissions", "leads"):
            connection.execute(sql.SQL("DELETE FROM {} WHERE id > %s").format(sql.Identifier(table)),
                               (watermarks[table],))
        connection.execute("DELETE FROM lead_keys WHERE xmin::text::bigint >= %s", (lock_rows_from,))
        connection.execute("DELETE FROM backfill_runs")
        connection.commit()
    settle()


def watermarks() -> tuple[dict[str, int], int]:
    with psycopg.connect(copy_url(), autocommit=True) as connection:
        marks = {}
        for table in ("outbox", "submissions", "leads"):
            row = connection.execute(
                sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(sql.Identifier(table))).fetchone()
            marks[table] = int(row[0]) if row else 0
        xid = connection.execute("SELECT txid_current()").fetchone()
    return marks, int(xid[0]) if xid else 0


def use_bench_database() -> None:
    """This process's settings: the bench database, no broker, no providers (nothing leaves the machine)."""
    os.environ.update(KEYS, DATABASE_URL=DATABASE_URL, CELERY_BROKER_URL="", SITES_FILE="",
                      ADMITFLOW_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"))
    providers = ("GRAVITYFORMS_", "HUBSPOT_", "TWILIO_", "SALESFORCE_")
    for name in [name for name in os.environ if name.startswith(providers)]:
        del os.environ[name]
    get_settings.cache_clear()


def prepare() -> tuple[dict[str, Any], str]:
    import json

    use_bench_database()
    recreate_database(DATABASE_URL)
    settings = get_settings()
    upgrade(settings)
    form = json.loads(FORM.read_text(encoding="utf-8"))
    site = load_sites(settings)[0].name
    with session_scope() as session:
        register_form(session, site=site, form_object=form)
    return form, site


def sizes(text: str) -> list[int]:
    values = sorted(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    if not values or values[0] < 1 or values[-1] > NEW_PEOPLE_FROM:
        raise argparse.ArgumentTypeError(f"sizes must be between 1 and {NEW_PEOPLE_FROM}")
    return values


def runs_of(measured: list[Measured]) -> Iterator[tuple[int, list[Measured]]]:
    for existing in sorted({m.existing for m in measured}):
        yield existing, [m for m in measured if m.existing == existing]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=sizes, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--entries", type=int, default=10_000, help="entries per measured run")
    parser.add_argument("--runs", type=int, default=2, help="measured runs per size")
    parser.add_argument("--workers", type=int, default=0,
                        help="process pages in this many worker processes while this one stores the next "
                             "(as `admitflow backfill --enqueue` with workers); 0: store and process in turn here")
    args = parser.parse_args()
    needed = NEW_PEOPLE_FROM + len(args.sizes) * args.runs * args.entries
    if needed > len(AREA_CODES) * 10_000:
        parser.error("too many entries for the fictional phone numbers: lower --entries or --runs")

    form, site = prepare()
    pool = multiprocessing.get_context("spawn").Pool(args.workers, initializer=use_bench_database) \
        if args.workers else None
    now = datetime.now(UTC)
    ciphertexts = Ciphertexts.make()
    measured: list[Measured] = []
    with watched() as watch:
        measure_all(args, form, site, pool, now, ciphertexts, measured)
    print_results(args, measured)
    print(watch.verdict())


def measure_all(args: argparse.Namespace, form: Any, site: str, pool: Any, now: datetime, ciphertexts: Ciphertexts,
                measured: list[Measured]) -> None:
    """Seed each size in turn and measure --runs imports at it, each beside the reference importing the same
    history (which goes first alternates), appending to `measured`."""
    existing, run = 0, 0
    for size in args.sizes:
        seconds = seed(existing, size, now, ciphertexts, site)
        print(f"seeded {size - existing} leads in {seconds:.0f} s ({size} stored)", file=sys.stderr, flush=True)
        existing = size
        for _ in range(args.runs):
            entries = history(run, args.entries, existing, now)
            results: dict[bool, Measured] = {}
            for reference in (run % 2 == 0, run % 2 == 1):
                marks, xid = watermarks()
                result = measure_reference(entries, existing, site, pool) if reference \
                    else measure(run, entries, form, existing, site, pool)
                results[reference] = result
                print(f"  {existing} leads, run {run}, {'reference' if reference else 'admitflow'}: "
                      f"{result.rate:.0f} entries/s", file=sys.stderr, flush=True)
                dispose_engines()
                remove_run(marks, xid)
            results[False].reference_rate = results[True].rate
            measured.append(results[False])
            run += 1


def print_results(args: argparse.Namespace, measured: list[Measured]) -> None:
    if args.workers:
        print(f"pages processed by {args.workers} worker processes; 'process ms' is the wall time per entry beyond "
              "storing, and 'cpu ms' this (storing) process's CPU only")
    print(f"{'leads stored':>12} {'run':>3} {'entries':>7} {'seconds':>7} {'entries/s':>9} {'store ms':>8} "
          f"{'process ms':>10} {'cpu ms':>6} {'new leads':>9} {'joined':>6} {'seq scans':>9} "
          f"{'reference/s':>11} {'ref / admitflow':>15}")
    for existing, group in runs_of(measured):
        for number, m in enumerate(group, start=1):
            store_ms, cpu_ms = m.store_seconds / m.entries * 1000, m.cpu_seconds / m.entries * 1000
            process_ms = (m.seconds - m.store_seconds) / m.entries * 1000
            print(f"{existing:>12} {number:>3} {m.entries:>7} {m.seconds:>7.1f} {m.rate:>9.0f} "
                  f"{store_ms:>8.3f} {process_ms:>10.3f} {cpu_ms:>6.2f} "
                  f"{m.new_leads:>9} {m.joined:>6} {m.seq_scans:>9} {m.reference_rate:>11.0f} "
                  f"{m.reference_rate / m.rate:>15.2f}")
    ratios = [m.reference_rate / m.rate for m in measured]
    print(f"the reference (bench/backfill_reference.py) imports the same histories {min(ratios):.2f} to "
          f"{max(ratios):.2f} times as fast as admitflow, run by run: at best, admitflow could reach "
          f"{min(m.reference_rate for m in measured):.0f} entries/s on this machine (its slowest run)")
    per_entry = {existing: statistics.median(m.seconds / m.entries for m in group)
                 for existing, group in runs_of(measured)}
    smallest, largest = min(per_entry), max(per_entry)
    slowest = min(m.rate for m in measured)
    print(f"slowest run: {slowest:.0f} entries/s (target >= 2000: {'met' if slowest >= 2000 else 'missed'})")
    if largest != smallest:
        ratio = per_entry[largest] / per_entry[smallest]
        print(f"per-entry cost at {largest} / at {smallest} leads (medians): {ratio:.2f} "
              f"(target <= 1.2: {'met' if ratio <= 1.2 else 'missed'})")
        cpu = {existing: statistics.median(m.cpu_seconds / m.entries for m in group)
               for existing, group in runs_of(measured)}
        if not args.workers:
            print(f"the same for this process's CPU time alone (less disturbed by other load): "
                  f"{cpu[largest] / cpu[smallest]:.2f}")


if __name__ == "__main__":
    main()

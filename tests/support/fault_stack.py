"""The whole product on private services, for fault injection: `admitflow web`, `worker` and `beat` on a private
PostgreSQL and Redis (tests/support/private_services.py) that a scenario may stop, restart or wipe, with HubSpot and
Twilio faked on loopback (tests/fakes/storms.py) and the WordPress site's Gravity Forms REST API too
(tests/fakes/gravityforms.py), so the poller can fetch entries whose webhooks failed.

Every entry is a different fictional person, so the right outcome is known: one lead, one CRM contact, one callback
task and one text to the on-call phone per entry. `tally()` counts what is missing and what is there twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock
from typing import Any

import requests
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from tests.fakes import gravityforms
from tests.fakes.gravityforms import FakeGravityForms
from tests.fakes.storms import StormyProviders
from tests.support.private_services import PrivateServices
from tests.support.processes import free_port, healthy, wait_for
from worker.store.leases import WORK_LEASE, WORKER_LEASE

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_FORM = REPO / "examples" / "gravityforms" / "form.json"
WEBHOOK_SECRET = "fault-webhook-secret"
# Fixed, fictional keys (the same as tests/conftest.py's): every entry here is generated.
KEYS = {
    "ADMITFLOW_ENCRYPTION_KEYS": "mH5GJ0QK3N0yC1qk2mYB0q5tq1N4m3E1mZpX0sB9a1A=",
    "ADMITFLOW_BLIND_INDEX_KEY": "dGVzdC1ibGluZC1pbmRleC1rZXktMzItYnl0ZXMtbG9uZyEhIQ==",
}
ON_CALL = "+16175550101"
LEAD_REF = re.compile(r"\bR-[0-9A-Z]{5}\b")
# One on-call person all week, so the right recipient does not depend on when the run happens.
ROSTER = f"""
supervisor = "dana"
[[staff]]
id = "avery"
name = "Avery Example"
phone = "{ON_CALL}"
hubspot_owner_id = "1001"
[[staff]]
id = "dana"
name = "Dana Example"
phone = "+16175550104"
hubspot_owner_id = "1004"
[[shifts]]
name = "always"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "00:00"
on_call = "avery"
"""
# Nothing moving for this long is a stall: longer than a dead worker's leases last, plus sweeps to find its work.
STALL_SECONDS = (WORK_LEASE + WORKER_LEASE).total_seconds() + 10
# Fictional area codes for 555-01xx numbers: 100 people per area code; not 617, whose 555-010x are the staff's.
AREA_CODES = ("212", "312", "415", "206", "303", "404", "503", "602", "702", "713")
# Fault runs move fast: the sweeper looks every 2 s for work untouched for 10 s (the least the setting allows).
FAST_RECOVERY = {
    "ADMITFLOW_SWEEP_INTERVAL_SECONDS": "2",
    "ADMITFLOW_STALE_AFTER_SECONDS": "10",
    "ADMITFLOW_RETRY_FIRST_SECONDS": "0.5",
    "POLL_INTERVAL_SECONDS": "3",
    "POLL_OVERLAP_MINUTES": "1",
    "TWILIO_SMS_PER_SECOND": "0",
    "HUBSPOT_REQUESTS_PER_10_SECONDS": "2000",
    "HUBSPOT_SEARCHES_PER_SECOND": "200",
    "ADMITFLOW_HTTP_TIMEOUT": "2",
    # Reminder calls and escalation texts are not under test; they would add texts to a long run.
    "ALERT_REMINDER_MINUTES": "600",
}


def person_entry(number: int) -> dict[str, Any]:
    """Person `number`'s entry, created now. Even numbers give only a phone (HubSpot has no unique key for it, so a
    second contact would show), odd ones only an email; each writes from its own device."""
    contact = ({"3": f"({AREA_CODES[number // 200]}) 555-01{number // 2 % 100:02d}", "2": ""} if number % 2 == 0
               else {"2": f"person.{number}@example.org", "3": ""})
    return {
        "id": str(100_000 + number), "form_id": "1", "status": "active",
        "date_created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "ip": f"2001:db8::{number + 1:x}", "user_agent": f"Mozilla/5.0 (fault run {number})",
        "source_url": "https://clinic.example.org/contact/",
        "1.3": "Jordan", "1.6": "Sample" + "".join(chr(ord("a") + int(digit)) for digit in str(number)), **contact,
        "4": "I would like to talk to someone about treatment options.", "5.1": "1",
        **({"6.1": "Yes"} if number % 2 == 0 else {}),  # OK to text: an acknowledgement, when PERSON_ACK_SMS is on
    }


def contact_key(entry: dict[str, Any]) -> str:
    """How the CRM fake's contact for this entry is recognised: its email, else its phone in E.164."""
    if entry["2"]:
        return str(entry["2"])
    return "+1" + "".join(ch for ch in entry["3"] if ch.isdigit())


@dataclass
class Tally:
    """What became of the submitted entries. `lost` and `doubled` break down by kind of item."""

    submitted: int
    leads: int
    contacts: int
    tasks: int
    alerts: int
    notes: int
    extra_notes: int  # notes beyond one per request, also counted as doubled
    # Texts Twilio sent that no staff_alerts row records yet (found again when the retry asks Twilio).
    unrecorded_texts: int
    lost: Counter[str]
    doubled: Counter[str]
    sources: Counter[str]

    def summary(self) -> str:
        return (f"submitted {self.submitted}, leads {self.leads}, contacts {self.contacts}, tasks {self.tasks}, "
                f"alerts {self.alerts} ({self.unrecorded_texts} unrecorded), notes {self.notes} "
                f"({self.extra_notes} extra); "
                f"lost {sum(self.lost.values())} {dict(self.lost)}, "
                f"doubled {sum(self.doubled.values())} {dict(self.doubled)}; stored by {dict(self.sources)}")


@dataclass
class FaultStack:
    services: PrivateServices
    database_url: str
    workdir: Path
    providers: StormyProviders
    site: FakeGravityForms
    env: dict[str, str]
    concurrency: int | None = None  # the production default (ADMITFLOW_WORKER_CONCURRENCY)
    web_url: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)  # entry id -> webhook status (0: no answer)
    lease_expiries: int = 0
    stalls: list[str] = field(default_factory=list)  # what waited, each time a stall was ended by hand
    worker_started_at: float = 0.0  # time.time() of the last worker start
    lock: Lock = field(default_factory=Lock)
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.database_url, poolclass=NullPool, hide_parameters=True)
        return self._engine

    def admitflow(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "worker.cli", *args], env=self.env, cwd=self.workdir, check=True,
                       capture_output=True, timeout=120)

    def start(self, role: str, *args: str) -> None:
        """Start `admitflow <command>` (the role's first word: worker-b is a second worker) in its own process
        group, logging to `<role>-<n>.log` in the work dir."""
        log = self.workdir / f"{role}-{self.starts[role]}.log"
        self.starts[role] += 1
        with log.open("wb") as handle:
            self.processes[role] = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", role.split("-")[0], *args], env=self.env, cwd=self.workdir,
                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def start_worker(self) -> None:
        self.worker_started_at = time.time()
        self.start("worker", *(("--concurrency", str(self.concurrency)) if self.concurrency else ()))

    def last_staff_text_at(self) -> float | None:
        """When the Twilio fake was last asked to text the on-call phone (time.time())."""
        state = self.providers.state
        with state.lock:
            return max((call.at for call in state.calls if call.method == "POST" and call.path.endswith(
                "/Messages.json") and isinstance(call.body, dict) and call.body.get("To") == ON_CALL), default=None)

    def wait_worker_busy(self, timeout: float = 60) -> bool:
        """Wait until the worker started last has taken a task; False if it has not within `timeout`."""
        log = self.workdir / f"worker-{self.starts['worker'] - 1}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists() and "] received" in log.read_text(errors="replace"):
                return True
            time.sleep(0.1)
        return False

    def alerts_in_flight(self) -> dict[int, datetime]:
        """The staff alerts being delivered now (their outbox rows leased), with their leases' ends."""
        with self.engine.connect() as connection:
            return {outbox_id: until for outbox_id, until in connection.execute(text(
                "SELECT id, leased_until FROM outbox WHERE kind = 'staff_alert' AND state = 'pending' "
                "AND leased_until > now()")).all()}

    def wait_alert_in_flight(self, left: dict[int, datetime], timeout: float = 60) -> set[int]:
        """Wait until a staff alert is being delivered under a lease not among `left` (those dead workers left);
        returns the alerts in flight then, or nothing if none was within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            flying = self.alerts_in_flight()
            if any(left.get(outbox_id) != until for outbox_id, until in flying.items()):
                return set(flying)
            time.sleep(0.05)
        return set()

    def delivered_at(self, outbox_ids: set[int]) -> dict[int, float]:
        """When these outbox rows were delivered (time.time()), for those delivered."""
        with self.engine.connect() as connection:
            return {outbox_id: at.timestamp() for outbox_id, at in connection.execute(text(
                "SELECT id, delivered_at FROM outbox WHERE id = ANY(:ids) AND delivered_at IS NOT NULL"),
                {"ids": sorted(outbox_ids)}).all()}

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool processes: no shutdown, no acknowledgement, no rollback."""
        worker = self.processes.pop("worker")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

    def stop(self, role: str, *, group: bool = False, timeout: float = 60) -> None:
        """SIGTERM, as a deploy or `docker compose stop` does (to the main process, or with `group` to every
        process in it, as systemd does), and wait for the warm shutdown; SIGKILL only if it hangs."""
        process = self.processes.pop(role, None)
        if process is None:
            return
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            raise AssertionError(f"admitflow {role} did not stop within {timeout:g}s of SIGTERM") from None
        try:
            os.killpg(process.pid, signal.SIGKILL)  # pool processes a group-less SIGTERM may have orphaned
        except ProcessLookupError:
            pass

    def expire_dead_leases(self) -> None:
        """With no worker running, end the leases dead workers left and the backoff of rows that kept failing: what
        waiting out the leases (worker/store/leases.py) and a retry's backoff (which doubles to 30 min in a long
        storm) would do."""
        assert "worker" not in self.processes, "a live worker may hold these leases"
        with self.engine.begin() as connection:
            connection.execute(text("UPDATE outbox SET leased_until = NULL WHERE state = 'pending'"))
            connection.execute(text("UPDATE outbox SET next_attempt_at = now() - interval '10 minutes' "
                                    "WHERE state = 'pending' AND next_attempt_at > now()"))
            connection.execute(text("UPDATE leads SET crm_lease_until = NULL"))
            connection.execute(text("UPDATE poll_cursors SET next_poll_at = now() WHERE next_poll_at > now()"))
        self.lease_expiries += 1

    def waiting_work(self) -> str:
        """What is still to do and why it waits: each unfinished outbox row's kind, attempts, lease, due time and
        last offer (seconds from now), its last error, and its lead's CRM lease; and the submissions not processed."""
        try:
            return self._waiting_work()
        except Exception as exc:  # the database is down or restarting
            return f"unknown ({type(exc).__name__})"

    def _waiting_work(self) -> str:
        with self.engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT o.id, o.kind, o.attempts, o.fruitless, "
                "extract(epoch FROM o.leased_until - now())::int, extract(epoch FROM o.next_attempt_at - now())::int, "
                "extract(epoch FROM o.offered_at - now())::int, o.unanswered, "
                "extract(epoch FROM l.crm_lease_until - now())::int, left(o.last_error, 160) "
                "FROM outbox o LEFT JOIN leads l ON l.id = o.lead_id WHERE o.state = 'pending' ORDER BY o.id LIMIT 10"
            )).all()
            received = connection.execute(text(
                "SELECT count(*), extract(epoch FROM min(offered_at) - now())::int FROM submissions "
                "WHERE state = 'received'")).one()
        described = [f"outbox {r[0]} {r[1]} attempts={r[2]} fruitless={r[3]} lease={r[4]} due={r[5]} "
                     f"offered={r[6]} unanswered={r[7]} lead_lease={r[8]} error={r[9]!r}" for r in rows]
        return "; ".join([*described, f"submissions received={received[0]} oldest offer={received[1]}"])

    def submit(self, number: int) -> int:
        """A person submits the form: WordPress stores the entry, then the Webhooks add-on posts it once."""
        entry = person_entry(number)
        self.site.add(entry)
        try:
            status = requests.post(
                f"{self.web_url}/hooks/gravityforms", data=json.dumps(entry), timeout=15,
                headers={"X-Admitflow-Secret": WEBHOOK_SECRET, "Content-Type": "application/json"},
            ).status_code
        except requests.RequestException:
            status = 0
        with self.lock:
            self.entries[entry["id"]] = entry
            self.answers[entry["id"]] = status
        return status

    def progress(self) -> tuple[int, int, int, int, int, int]:
        """Stored submissions, those still to process, outbox rows, rows delivered, rows dead, and delivery attempts
        made (a row retried through a vendor storm is work moving, even while nothing gets delivered)."""
        with self.engine.connect() as connection:
            stored, waiting = connection.execute(text(
                "SELECT count(*), count(*) FILTER (WHERE state = 'received') FROM submissions")).one()
            rows, delivered, dead, attempts = connection.execute(text(
                "SELECT count(*), count(*) FILTER (WHERE state = 'delivered'), count(*) FILTER (WHERE state = 'dead'), "
                "coalesce(sum(attempts), 0) FROM outbox")).one()
        return int(stored), int(waiting), int(rows), int(delivered), int(dead), int(attempts)

    def _snapshot(self) -> tuple[int, int, int, int, int, int] | None:
        try:
            return self.progress()
        except Exception:  # the database is down or restarting
            return None

    def settle(self, timeout: float, *, stall_seconds: float = STALL_SECONDS) -> None:
        """Wait until every entry is stored and processed and every outbox row is delivered (or dead). When nothing
        moves, not even a delivery attempt, for `stall_seconds` (longer than a dead worker's leases last and the
        sweeper needs to find stale work), the rest waits on a lease no one renews or a long backoff: the worker is
        stopped, leases and backoffs are ended, and it starts again (counted in `lease_expiries`, what waited in
        `stalls`)."""
        deadline = time.monotonic() + timeout
        last, moved_at = None, time.monotonic()
        while True:
            snapshot = self._snapshot()
            if snapshot is not None:
                stored, waiting, rows, delivered, dead, _ = snapshot
                if stored >= len(self.entries) and waiting == 0 and rows > 0 and delivered + dead == rows:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled after {timeout:g}s: (stored, to process, outbox rows, "
                                     f"delivered, dead, attempts) = {snapshot} for {len(self.entries)} entries; "
                                     f"waiting: {self.waiting_work()}")
            if snapshot != last:
                last, moved_at = snapshot, time.monotonic()
            elif time.monotonic() - moved_at > stall_seconds:
                self.stalls.append(self.waiting_work())
                self.stop("worker")
                self.expire_dead_leases()
                self.start_worker()
                moved_at = time.monotonic()
            time.sleep(0.5)

    def tally(self) -> Tally:
        with self.engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT s.entry_id, s.source, l.ref FROM submissions s LEFT JOIN leads l ON l.id = s.lead_id")).all()
            leads = int(connection.execute(text("SELECT count(*) FROM leads")).scalar_one())
            dead = int(connection.execute(text("SELECT count(*) FROM outbox WHERE state = 'dead'")).scalar_one())
            recorded = set(connection.execute(text("SELECT provider_id FROM staff_alerts")).scalars())
            recorded |= set(connection.execute(text("SELECT provider_ref FROM outbox")).scalars())
        state = self.providers.state
        with state.lock:
            contacts = Counter(contact_key_of(record["properties"]) for record in state.contacts.values())
            tasks = Counter(record["properties"].get("hs_task_subject", "") for record in state.tasks.values())
            notes = Counter(_entry_of_note(record["properties"].get("hs_note_body", ""))
                            for record in state.notes.values())
            texts = list(state.sms)
        ref_of = {str(entry_id): ref for entry_id, _, ref in rows}
        lost: Counter[str] = Counter()
        doubled: Counter[str] = Counter()
        refs_alerted = Counter(match.group(0) for sms in texts if sms["To"] == ON_CALL
                               for match in [LEAD_REF.search(sms["Body"])] if match)
        for entry_id, entry in self.entries.items():
            ref = ref_of.get(entry_id)
            for kind, count in (("contacts", contacts[contact_key(entry)]),
                                ("tasks", tasks[f"Callback {ref}"] if ref else 0),
                                ("alerts", refs_alerted[ref] if ref else 0)):
                lost[kind] += count == 0
                doubled[kind] += max(0, count - 1)
            lost["entries"] += entry_id not in ref_of
            lost["leads"] += entry_id in ref_of and ref is None
        doubled["leads"] = max(0, leads - len({ref for ref in ref_of.values() if ref}))
        doubled["stray alerts"] = sum(1 for sms in texts if sms["To"] == ON_CALL) - sum(refs_alerted.values())
        lost["dead outbox rows"] = dead
        extra_notes = sum(max(0, notes[entry_id] - 1) for entry_id in self.entries)
        doubled["notes"] = extra_notes
        return Tally(
            submitted=len(self.entries), leads=leads, contacts=len(state.contacts), tasks=len(state.tasks),
            alerts=sum(refs_alerted.values()), notes=len(state.notes), extra_notes=extra_notes,
            unrecorded_texts=sum(1 for sms in texts if sms["sid"] not in recorded), lost=+lost, doubled=+doubled,
            sources=Counter(source for _, source, _ in rows),
        )

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.workdir.glob("*.log")))


def contact_key_of(properties: dict[str, Any]) -> str:
    return str(properties.get("email") or properties.get("phone") or "")


def _entry_of_note(body: str) -> str:
    marker = ", entry "
    return body.split(marker, 1)[1].split(")", 1)[0] if marker in body else ""


@contextmanager
def fault_stack(
    services: PrivateServices, workdir: Path, name: str, *, concurrency: int | None = None, beat: bool = True,
    **extra_env: str,
) -> Iterator[FaultStack]:
    """A fresh database `faults_<name>` and an empty Redis, web (and beat) started, the worker started; every
    process stopped however the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    database_url = services.postgres.create_database(f"faults_{name}")
    services.redis.client().flushall()
    (workdir / "roster.toml").write_text(ROSTER)
    form = json.loads(EXAMPLE_FORM.read_text())
    with StormyProviders() as providers, FakeGravityForms([form]) as site:
        stack = FaultStack(services, database_url, workdir, providers, site, _environment(
            database_url, services.redis.url(), workdir, providers.url, site.url, **extra_env), concurrency)
        try:
            stack.admitflow("migrate")
            stack.admitflow("forms", "add", str(EXAMPLE_FORM))
            port = free_port()
            stack.web_url = f"http://127.0.0.1:{port}"
            stack.start("web", "--port", str(port))
            if beat:
                stack.start("beat", "--schedule", str(workdir / "celerybeat-schedule"))
            stack.start_worker()
            wait_for(lambda: healthy(stack.web_url), timeout=60, what="the web server's /healthz")
            yield stack
        finally:
            for role in list(stack.processes):
                with suppress(AssertionError):
                    stack.stop(role)
            if stack._engine is not None:
                stack._engine.dispose()


def _environment(
    database_url: str, redis_url: str, workdir: Path, providers_url: str, site_url: str, **extra: str
) -> dict[str, str]:
    inherited = {name: value for name, value in os.environ.items() if not name.startswith(
        ("ADMITFLOW_", "HUBSPOT_", "TWILIO_", "SALESFORCE_", "GRAVITYFORMS_", "STATUS_", "CELERY_", "POLL_",
         "ALERT_", "SITES_FILE", "ROSTER_FILE", "DATABASE_URL"))}
    return {
        **inherited, **KEYS, **FAST_RECOVERY,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": redis_url,
        "GRAVITYFORMS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GRAVITYFORMS_BASE_URL": site_url,
        "GRAVITYFORMS_CONSUMER_KEY": gravityforms.CONSUMER_KEY,
        "GRAVITYFORMS_CONSUMER_SECRET": gravityforms.CONSUMER_SECRET,
        "GRAVITYFORMS_FORM_IDS": "1",
        "HUBSPOT_TOKEN": "pat-na1-fault-token",
        "HUBSPOT_BASE_URL": providers_url,
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 30 + "66",
        "TWILIO_AUTH_TOKEN": "fault-auth-token",
        "TWILIO_FROM_NUMBER": "+18555550100",
        "TWILIO_API_BASE_URL": providers_url,
        "ROSTER_FILE": str(workdir / "roster.toml"),
        "ADMITFLOW_KEY_FILE": str(workdir / "keys.json"),
        "ADMITFLOW_LOG_LEVEL": "INFO",
        **extra,
    }

"""Fault-injection scenarios, shared by tests/integration/test_faults.py (small) and bench/fault_injection.py (large).

Each scenario submits fictional people through the real stack (tests/support/fault_stack.py) while it breaks
something, waits until the stack has settled, and returns the tally: every entry must be one lead with one CRM
contact, one callback task and one text to the on-call phone; `lost` and `doubled` must both be 0.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from config.celery_app import WORK_QUEUE
from tests.support import vendor_scenarios as vendor
from tests.support.fault_stack import FaultStack, Tally, fault_stack
from tests.support.private_services import PrivateServices
from tests.support.processes import wait_for


@dataclass(frozen=True)
class Scale:
    submissions: int = 40
    rate: float = 10.0  # entries per second
    postgres_outage_seconds: float = 4.0
    worker_kills: int = 3
    deploys: int = 3
    slow_entries: int = 6  # the visibility-timeout scenario holds every CRM creation, so it stays small
    # A guard against a run that never settles, not a target: a storm's retries take minutes on a slow machine.
    settle_seconds: float = 300.0


@dataclass
class Outcome:
    scenario: str
    tally: Tally
    seconds: float
    facts: dict[str, int] = field(default_factory=dict)  # what the fault did, to show it happened
    stalls: tuple[str, ...] = ()  # what was waiting each time the stack had to end a stall by hand

    @property
    def lost(self) -> int:
        return sum(self.tally.lost.values())

    @property
    def doubled(self) -> int:
        return sum(self.tally.doubled.values())

    def report(self) -> str:
        stalls = "".join(f"\n  stall: {stall}" for stall in self.stalls)
        return f"{self.scenario}: {self.tally.summary()}; {self.facts}; {self.seconds:.0f}s{stalls}"


class Submitter(threading.Thread):
    """People submitting the form at a steady rate, in the background."""

    def __init__(self, stack: FaultStack, count: int, rate: float, first: int = 0) -> None:
        super().__init__(daemon=True)
        self.stack, self.count, self.interval, self.first = stack, count, 1.0 / rate, first
        self.done = 0

    def run(self) -> None:
        started = time.monotonic()
        for number in range(self.count):
            time.sleep(max(0.0, started + number * self.interval - time.monotonic()))
            self.stack.submit(self.first + number)
            self.done += 1

    def reach(self, share: float) -> None:
        target = int(self.count * share)
        wait_for(lambda: self.done >= target, timeout=60 + self.count / 2, what=f"{target} submissions")

    def finish(self) -> None:
        self.join(timeout=120 + self.count)
        assert not self.is_alive(), "the submitter did not finish"


def _replace_busy_workers(stack: FaultStack, scale: Scale, times: int, end_worker: Callable[[], None]) -> None:
    """While entries flow, `times` over: once the worker has taken work, end it at a random moment, start another."""
    submitter = Submitter(stack, scale.submissions, scale.rate)
    submitter.start()
    for _ in range(times):
        stack.wait_worker_busy()
        time.sleep(random.uniform(0.0, 1.0))
        end_worker()
        stack.start_worker()
    submitter.finish()
    stack.settle(scale.settle_seconds)


HUBSPOT, TWILIO = "/crm/", "/2010-04-01/"
RESTART_TO_LAST_TEXT = "seconds from the last restart to the last staff text"
RESTART_TO_ALERTS_IN_FLIGHT = "most seconds from a restart to an alert in flight at a kill going out"


def worker_sigkill(stack: FaultStack, scale: Scale) -> dict[str, int]:
    """Burst after burst, SIGKILL the worker (pool processes too) while a staff alert is in flight (Twilio takes
    0.3 s to answer a text it has sent) and start a new one at once. What the dead worker held comes back with no
    help: its leases and its row in live_workers run out, and the sweeper offers the work again."""
    storm = stack.providers.storm
    storm.hold_seconds, storm.after_work = 0.3, {TWILIO: 1.0}
    per_burst = scale.submissions // scale.worker_kills
    restarts: list[tuple[float, set[int]]] = []  # each restart, with the alerts in flight at the kill before it
    for burst in range(scale.worker_kills):
        count = per_burst if burst < scale.worker_kills - 1 else scale.submissions - per_burst * burst
        left = stack.alerts_in_flight()
        submitter = Submitter(stack, count, scale.rate, first=per_burst * burst)
        submitter.start()
        in_flight = stack.wait_alert_in_flight(left)
        stack.kill_worker()
        stack.start_worker()
        restarts.append((stack.worker_started_at, in_flight))
        submitter.finish()
    stack.settle(scale.settle_seconds)
    delivered = stack.delivered_at(set().union(*(flying for _, flying in restarts)))
    started = [restarted for restarted, _ in restarts]
    # From the start of the worker that delivered it (a later kill may have caught it in flight again).
    waits = [at - max([start for start in started if start <= at], default=at) if (at := delivered.get(
        outbox_id)) is not None else math.inf for _, flying in restarts for outbox_id in flying]
    last_restart = restarts[-1][0]
    last_text = stack.last_staff_text_at() or last_restart
    return {"worker SIGKILLs": scale.worker_kills,
            "kills with a staff alert in flight": sum(1 for _, flying in restarts if flying),
            RESTART_TO_ALERTS_IN_FLIGHT: math.ceil(max([0.0, *waits])) if all(map(math.isfinite, waits)) else -1,
            RESTART_TO_LAST_TEXT: math.ceil(max(0.0, last_text - last_restart))}


def redis_restart(stack: FaultStack, scale: Scale) -> dict[str, int]:
    """Restart Redis (its AOF kept) halfway through."""
    submitter = Submitter(stack, scale.submissions, scale.rate)
    submitter.start()
    submitter.reach(0.5)
    stack.services.redis.restart()
    submitter.finish()
    stack.settle(scale.settle_seconds)
    return {"Redis restarts": 1, "workers that died of it": _count(stack, "Unrecoverable error")}


def postgres_outage(stack: FaultStack, scale: Scale) -> dict[str, int]:
    """Stop PostgreSQL for a while from a third of the way in: webhooks meanwhile get 503 and are not sent again,
    so those entries can only come in through the poller once the database is back."""
    submitter = Submitter(stack, scale.submissions, scale.rate)
    submitter.start()
    submitter.reach(1 / 3)
    stack.services.postgres.stop()
    time.sleep(scale.postgres_outage_seconds)  # the outage itself
    stack.services.postgres.start()
    submitter.finish()
    stack.settle(scale.settle_seconds)
    refused = [entry_id for entry_id, status in stack.answers.items() if status != 202]
    with stack.engine.connect() as connection:
        polled = {str(entry_id) for entry_id in connection.execute(
            text("SELECT entry_id FROM submissions WHERE source = 'poll'")).scalars()}
    return {"webhooks refused": len(refused), "refused and then polled": len(polled & set(refused))}


def redis_wiped(stack: FaultStack, scale: Scale) -> dict[str, int]:
    """With the worker down (a deploy in progress), half the entries are queued in Redis; Redis then comes back
    with no data. Only the sweeper can know those entries still need work."""
    first_half = scale.submissions // 2
    submitter = Submitter(stack, first_half, scale.rate)
    submitter.run()
    stack.stop("worker")
    for number in range(first_half, scale.submissions):
        stack.submit(number)
    with stack.engine.connect() as connection:
        waiting = set(connection.execute(text("SELECT id FROM submissions WHERE processed_at IS NULL")).scalars())
    # The web process hands ids on a page at a time after a short linger: wipe only once they are all in Redis,
    # or a page sent after the wipe would spare the sweeper its work and the scenario would test nothing.
    client = stack.services.redis.client()
    wait_for(lambda: waiting <= _queued_submission_ids(client), timeout=30,
             what="the web process to hand the stored submissions to Redis")
    wiped = len(_queued_submission_ids(client))
    stack.services.redis.restart_wiped()
    stack.start_worker()
    stack.settle(scale.settle_seconds)
    return {"submissions wiped": wiped, "sweeps that re-sent work": _count(stack, "sweep re-dispatched")}


def _queued_submission_ids(client: Any) -> set[int]:
    """Submission ids carried by the processing messages waiting in the work queue (kombu's Redis format)."""
    found: set[int] = set()
    for raw in client.lrange(WORK_QUEUE, 0, -1):
        message = json.loads(raw)
        if message["headers"].get("task") in ("admitflow.process_submissions", "admitflow.process_submission"):
            (item, *_), _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.update(item if isinstance(item, list) else [item])
    return found


SUCCEEDED = re.compile(r"Task admitflow\.\w+\[([0-9a-f-]{36})\] succeeded")


def worker_sigterm(stack: FaultStack, scale: Scale) -> dict[str, int]:
    """Deploy after deploy: SIGTERM the worker (its warm shutdown finishes running tasks) and start a new one.

    A task that finishes during the warm shutdown may never be acknowledged to Redis (celery/celery#3802), so it
    is delivered again and finds its work done: counted apart from a finished task run again for another reason."""
    _replace_busy_workers(stack, scale, scale.deploys, lambda: stack.stop("worker"))
    succeeded = Counter(SUCCEEDED.findall(stack.log_text()))
    finished_in_shutdown: set[str] = set()
    for log in stack.workdir.glob("worker-*.log"):
        _, shutdown, after = log.read_text(errors="replace").partition("Warm shutdown")
        if shutdown:
            finished_in_shutdown.update(SUCCEEDED.findall(after))
    run_again = {task for task, times in succeeded.items() if times > 1}
    return {"deploys": scale.deploys, "workers started": stack.starts["worker"],
            "finished tasks run again": sum(succeeded[task] - 1 for task in run_again),
            "of them finished in a warm shutdown": len(run_again & finished_in_shutdown)}


def visibility_timeout(stack: FaultStack, scale: Scale) -> dict[str, int]:
    """HubSpot holds every creation longer than the broker's visibility timeout (2 s here), so Redis hands the
    same task to a second worker while the first still runs it."""
    stack.providers.state.create_answer_delay = 4.0
    for number in range(scale.slow_entries):
        stack.submit(number)
    time.sleep(3.0)  # past the visibility timeout: a worker starting now takes back what the first holds
    stack.start("worker-b", "--concurrency", "2")
    stack.settle(scale.settle_seconds)
    received = Counter(re.findall(r"Task admitflow\.\w+\[([0-9a-f-]{36})\] received", stack.log_text()))
    return {"task messages delivered twice": sum(1 for n in received.values() if n > 1)}


def provider_storms(stack: FaultStack, scale: Scale) -> dict[str, int]:
    """HubSpot and Twilio fail 30% of calls (429 or 502); a tenth of HubSpot's answers come after our timeout
    (the write happened), and a tenth of Twilio's requests time out without a text going out."""
    state, storm = stack.providers.state, stack.providers.storm
    state.failure_rate, state.retry_after = 0.3, "0.2"
    storm.hold_seconds, storm.after_work, storm.without_work = 1.5, {HUBSPOT: 0.1}, {TWILIO: 0.1}
    Submitter(stack, scale.submissions, scale.rate).run()
    stack.settle(scale.settle_seconds)
    return {"provider calls": len(state.calls), "answers held past the timeout": storm.held}


def twilio_timeouts_after_send(stack: FaultStack, scale: Scale) -> dict[str, int]:
    """Twilio sends half the texts but answers after our timeout: the retry must find the text, not send another."""
    storm = stack.providers.storm
    storm.hold_seconds, storm.after_work = 1.5, {TWILIO: 0.5}
    Submitter(stack, scale.submissions, scale.rate).run()
    stack.settle(scale.settle_seconds)
    return {"texts answered after the timeout": storm.held}


def _count(stack: FaultStack, phrase: str) -> int:
    return stack.log_text().count(phrase)


@dataclass(frozen=True)
class Scenario:
    run: Callable[[FaultStack, Scale], dict[str, int]]
    env: dict[str, str] = field(default_factory=dict)
    # More of what each lead must have exactly once, counted after the run: (lost, doubled) by kind.
    desk: Callable[[FaultStack], tuple[Counter[str], Counter[str]]] | None = None


SCENARIOS: dict[str, Scenario] = {
    "worker_sigkill": Scenario(worker_sigkill),
    "redis_restart": Scenario(redis_restart),
    "postgres_outage": Scenario(postgres_outage),
    "redis_wiped": Scenario(redis_wiped),
    "worker_sigterm": Scenario(worker_sigterm),
    "visibility_timeout": Scenario(visibility_timeout, {"CELERY_VISIBILITY_TIMEOUT_SECONDS": "2",
                                                        "ADMITFLOW_HTTP_TIMEOUT": "10"}),
    # Random failures are independent, so quick retries suit them. Capped: a staff alert whose lookup and send both
    # failed nine times running (40% of Twilio calls fail here) would otherwise wait 64 s, and the run would stall
    # on backoff, not on a fault.
    "provider_storms": Scenario(provider_storms, {"ADMITFLOW_HTTP_TIMEOUT": "1", "ADMITFLOW_RETRY_MAX_SECONDS": "4",
                                                  "ADMITFLOW_RETRY_FIRST_SECONDS": "0.25"}),
    "twilio_timeouts_after_send": Scenario(twilio_timeouts_after_send, {"ADMITFLOW_HTTP_TIMEOUT": "1",
                                                                        "ADMITFLOW_RETRY_MAX_SECONDS": "4"}),
    # The vendors' faults (tests/support/vendor_scenarios.py): every create may lose its answer, search lags.
    **{f"vendor_lost_answers_lag{lag}": Scenario(vendor.lost_answers(lag), vendor.lost_answers_env(lag),
                                                 vendor.desk_tally) for lag in (0, 5, 30)},
    "crm_storm_one_lead": Scenario(vendor.crm_storm(batched=False), vendor.storm_env(batched=False)),
    "crm_storm_batched": Scenario(vendor.crm_storm(batched=True), vendor.storm_env(batched=True)),
}


def run_scenario(name: str, services: PrivateServices, workdir: Path, scale: Scale,
                 scenario: Scenario | None = None) -> Outcome:
    """Run a named scenario (or `scenario`, named `name`) on a fresh stack and tally what it left."""
    scenario = scenario or SCENARIOS[name]
    started = time.monotonic()
    with fault_stack(services, workdir / name, name, **scenario.env) as stack:
        # Stalls the stack had to end by hand (FaultStack.settle): work that came back only with help.
        facts = {**scenario.run(stack, scale), "lease expiries needed": stack.lease_expiries}
        tally = stack.tally()
        if scenario.desk is not None:
            lost, doubled = scenario.desk(stack)
            tally.lost.update(lost)
            tally.doubled.update(doubled)
        return Outcome(name, tally, time.monotonic() - started, facts, tuple(stack.stalls))

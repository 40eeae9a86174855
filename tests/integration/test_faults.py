"""Fault injection on the real processes: the worker SIGKILLed and SIGTERMed, Redis restarted and wiped, PostgreSQL
stopped, a task outliving the broker's visibility timeout, HubSpot and Twilio failing in storms. Every entry must
still become exactly one lead, one CRM contact and callback task, and one text to the on-call phone.

The faults hit a private Redis and PostgreSQL (tests/support/private_services.py), never the shared ones. The
scenarios live in tests/support/fault_scenarios.py; `python bench/fault_injection.py` runs them at a larger scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.support.fault_scenarios import RESTART_TO_ALERTS_IN_FLIGHT, Outcome, Scale, run_scenario
from tests.support.private_services import PrivateServices, missing_private_services, private_services

pytestmark = pytest.mark.services

SCALE = Scale(submissions=30, rate=10.0, postgres_outage_seconds=4.0, worker_kills=3, deploys=3, slow_entries=6)


@pytest.fixture(scope="module")
def services() -> Iterator[PrivateServices]:
    need(missing_private_services())
    with private_services() as started:
        yield started


def run(name: str, services: PrivateServices, workdir: Path, scale: Scale = SCALE) -> Outcome:
    outcome = run_scenario(name, services, workdir, scale)
    print(f"\n{outcome.report()}")  # the counts, for the log of a passing run too
    return outcome


def nothing_lost_or_doubled(outcome: Outcome) -> None:
    assert (outcome.lost, outcome.doubled) == (0, 0), outcome.report()


CHECKS: dict[str, Callable[[dict[str, int]], bool]] = {
    "worker_sigkill": lambda facts: facts["kills with a staff alert in flight"] > 0,
    "redis_restart": lambda facts: facts["Redis restarts"] == 1,
    "postgres_outage": lambda facts: 0 < facts["webhooks refused"] == facts["refused and then polled"],
    "redis_wiped": lambda facts: facts["submissions wiped"] > 0 and facts["sweeps that re-sent work"] > 0,
    "worker_sigterm": lambda facts: facts["workers started"] == facts["deploys"] + 1,
    "visibility_timeout": lambda facts: facts["task messages delivered twice"] > 0,
    "provider_storms": lambda facts: facts["answers held past the timeout"] > 0,
}


# How soon the work came back, where the scenario measures it.
RECOVERY: dict[str, Callable[[dict[str, int]], bool]] = {
    # Every staff alert in flight goes out within 30 s of a worker being back.
    "worker_sigkill": lambda facts: 0 <= facts[RESTART_TO_ALERTS_IN_FLIGHT] <= 30,
    # The worker rides out the broker's restart: it reconnects, it does not exit and wait for someone to start it.
    "redis_restart": lambda facts: facts["workers that died of it"] == 0,
}


@pytest.mark.parametrize("scenario", list(CHECKS))
def test_every_entry_becomes_one_lead_one_crm_contact_and_task_and_one_staff_text_despite(
    scenario: str, services: PrivateServices, tmp_path: Path
) -> None:
    outcome = run(scenario, services, tmp_path)
    nothing_lost_or_doubled(outcome)
    assert CHECKS[scenario](outcome.facts), f"the fault did not happen as planned: {outcome.report()}"
    # No stall had to be ended by hand (a lease that never ran out, a backoff that never ended), whatever the fault.
    recovered = RECOVERY.get(scenario, lambda facts: True)
    assert outcome.facts["lease expiries needed"] == 0 and recovered(outcome.facts), (
        f"the work came back too late, or only with help: {outcome.report()}")


def test_a_text_twilio_answers_after_our_timeout_is_not_sent_twice(services: PrivateServices, tmp_path: Path) -> None:
    nothing_lost_or_doubled(run("twilio_timeouts_after_send", services, tmp_path, Scale(submissions=12)))

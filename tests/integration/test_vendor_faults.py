"""Exactly once at every vendor, on the real web, worker and beat (PostgreSQL, Redis): a burst of people while every
create at HubSpot and Twilio may be stored and then lose its answer, and HubSpot's search trails writes. Each lead
must end with exactly one contact, note, callback task, acknowledgement text, staff text per alert step, reminder
call per step and call log (tests/support/vendor_scenarios.py).

Randomized: the lag, the share of lost answers, batched or one lead per call, and the fakes' choices come from a
seed, printed with the outcome; ADMITFLOW_VENDOR_SEED replays one run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.support import vendor_scenarios as vendor
from tests.support.fault_scenarios import Scale, Scenario, run_scenario
from tests.support.private_services import PrivateServices, missing_private_services, private_services

pytestmark = pytest.mark.services

BURST = Scale(submissions=16, rate=8.0, settle_seconds=90.0)


@pytest.fixture(scope="module")
def services() -> Iterator[PrivateServices]:
    need(missing_private_services())
    with private_services() as started:
        yield started


def test_every_lead_gets_one_of_everything_when_any_create_may_lose_its_answer_and_search_lags(
    services: PrivateServices, tmp_path: Path
) -> None:
    seed = int(os.environ.get("ADMITFLOW_VENDOR_SEED") or random.SystemRandom().randrange(2**32))
    chosen = random.Random(seed)
    lag, share = chosen.choice((0.0, 2.0, 4.0)), round(chosen.uniform(0.25, 0.5), 2)
    batched = chosen.random() < 0.5  # HubSpot batches (custom properties on), or one lead per call
    random.seed(seed)  # the fakes' own draws (which create loses its answer, and how)
    mode = {"HUBSPOT_CUSTOM_PROPERTIES": "true", "HUBSPOT_BATCH_SIZE": "100"} if batched else {}
    scenario = Scenario(vendor.lost_answers(lag, share), vendor.lost_answers_env(lag) | mode, vendor.desk_tally)

    outcome = run_scenario("vendor_random", services, tmp_path, BURST, scenario)

    print(f"\nseed {seed} (lag {lag:g}s, {share:.0%} of creates lose their answer, "
          f"{'batched' if batched else 'one lead per call'}): {outcome.report()}")
    assert (outcome.lost, outcome.doubled) == (0, 0), f"seed {seed}: {outcome.report()}"
    assert outcome.facts["answers lost"] > 0, f"seed {seed}: no answer was lost: {outcome.report()}"
    assert outcome.facts["HubSpot bodies refused by its models"] == 0, outcome.report()
    assert outcome.facts["escalation steps not taken in time"] == 0, outcome.report()
    assert outcome.facts["claims bridged"] == BURST.submissions // 2, outcome.report()

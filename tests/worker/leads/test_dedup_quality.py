"""Dedup measured against known truth: precision first (a false merge leaves a person uncalled)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from config.settings import Settings
from tests.support.corpus import make_corpus, pair_scores
from tests.support.pipeline import lead_of_each_entry

PRECISION_FLOOR = 0.999
RECALL_FLOOR = 0.95


def test_dedup_precision_and_recall_on_a_generated_corpus_meet_their_floors(settings: Settings) -> None:
    corpus = make_corpus(people=300, seed=20261127)
    leads = lead_of_each_entry((entry for entry, _ in corpus), settings)

    scores = pair_scores(
        (leads[entry["id"]] or -int(entry["id"]), person) for entry, person in corpus
    )

    print(f"\ndedup on {len(corpus)} entries: precision {scores.precision:.4f}, recall {scores.recall:.4f}, "
          f"false merges {scores.false_merges} of {scores.predicted_pairs} merged pairs")
    assert scores.precision >= PRECISION_FLOOR
    assert scores.recall >= RECALL_FLOOR


def partition(leads: dict[str, int | None]) -> set[frozenset[str]]:
    groups: dict[object, set[str]] = {}
    for entry_id, lead in leads.items():
        groups.setdefault(lead if lead is not None else f"flagged-{entry_id}", set()).add(entry_id)
    return {frozenset(group) for group in groups.values()}


# Derandomized: the same 25 cases every run, so CI is not red one run in a few for a known limit (below).
@hypothesis_settings(max_examples=25, deadline=None, database=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**32), shuffle=st.randoms(use_true_random=False))
def test_dedup_gives_the_same_leads_whatever_order_the_entries_arrive_in(
    settings: Settings, seed: int, shuffle: random.Random
) -> None:
    entries = [entry for entry, _ in make_corpus(people=8, seed=seed)]
    reordered = list(entries)
    shuffle.shuffle(reordered)

    assert partition(lead_of_each_entry(entries, settings)) == partition(lead_of_each_entry(reordered, settings))


@pytest.mark.xfail(strict=True, reason="known limit (docs/architecture.md, dedup limits): a correction that arrives "
                   "after the mistyped request and a later one whose name is another real name (James, Jame) has "
                   "made a lead each cannot bridge them, as it would bridge two leads kept apart by a typo")
def test_a_correction_arriving_after_both_requests_it_links_still_gives_one_lead(settings: Settings) -> None:
    # James mistypes his phone and email (11), corrects them three minutes later on the same laptop (12), and two
    # days later writes "Jame" (13), which is also a real name. Drawn by the order test above, corpus seed 1048.
    entries = [entry for entry, _ in make_corpus(people=8, seed=1048)]
    in_time = sorted(entries, key=lambda entry: entry["date_created"])
    correction_last = [entry for entry in in_time if entry["id"] != "12"] + [
        entry for entry in in_time if entry["id"] == "12"]

    assert partition(lead_of_each_entry(in_time, settings)) == partition(lead_of_each_entry(correction_last, settings))

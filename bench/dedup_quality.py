"""Dedup precision and recall on generated corpora with known truth, beside the plain rule it must beat.

    python bench/dedup_quality.py [--people 2000] [--seeds 3] [--pairs]

Runs the real intake and dedup (in-memory SQLite, one entry at a time in a shuffled order) and prints pairwise
precision and recall per corpus; in the same run, the reference: one lead per set of entries sharing a normalized
phone or email; and the ceiling: the share of true pairs any evidence could link. With --pairs, each pair dedup
got wrong: two people's entries in one lead (a false merge), one person's in two (a false split), with the fields
the evidence weighed (the corpus is fictional, so printing them shows no one's PHI).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Fixed throwaway keys: the corpus is fictional and the database lives in memory.
os.environ.setdefault("ADMITFLOW_ENCRYPTION_KEYS", "mH5GJ0QK3N0yC1qk2mYB0q5tq1N4m3E1mZpX0sB9a1A=")
os.environ.setdefault("ADMITFLOW_BLIND_INDEX_KEY", "dGVzdC1ibGluZC1pbmRleC1rZXktMzItYnl0ZXMtbG9uZyEhIQ==")

from bench.quiet import watched
from config.settings import Settings, get_settings
from tests.support.corpus import contact_rule, linkable_share, make_corpus, pair_scores
from tests.support.pipeline import lead_of_each_entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pairs", action="store_true", help="print the falsely merged and split pairs")
    args = parser.parse_args()
    settings = get_settings()
    print(f"{'seed':>4} {'entries':>7} {'true pairs':>10} {'merged':>6} {'false':>5} {'precision':>9} {'recall':>6} "
          f"{'ceiling':>7} | {'rule precision':>14} {'rule recall':>11} | {'seconds':>7}")
    with watched() as watch:
        for seed in range(1, args.seeds + 1):
            score_seed(seed, args.people, settings, pairs=args.pairs)
    # Precision and recall do not depend on the load; the seconds do.
    print(watch.verdict())


def score_seed(seed: int, people: int, settings: Settings, *, pairs: bool = False) -> None:
    corpus = make_corpus(people=people, seed=seed)
    started = time.perf_counter()
    leads = lead_of_each_entry((entry for entry, _ in corpus), settings)
    elapsed = time.perf_counter() - started
    scores = pair_scores((leads[entry["id"]] or -int(entry["id"]), person) for entry, person in corpus)
    rule = contact_rule(corpus)
    print(f"{seed:>4} {len(corpus):>7} {scores.true_pairs:>10} {scores.predicted_pairs:>6} "
          f"{scores.false_merges:>5} {scores.precision:>9.4f} {scores.recall:>6.4f} {linkable_share(corpus):>7.4f}"
          f" | {rule.precision:>14.4f} {rule.recall:>11.4f} | {elapsed:>7.1f}", flush=True)
    if pairs:
        print_wrong_pairs(corpus, leads)


def print_wrong_pairs(corpus: list[tuple[dict[str, Any], int]], leads: dict[str, int | None]) -> None:
    """Each pair of entries whose lead disagrees with the truth, the earlier entry first."""
    together: dict[tuple[str, object], list[tuple[dict[str, Any], int]]] = {}
    for entry, person in sorted(corpus, key=lambda item: (item[0]["date_created"], int(item[0]["id"]))):
        together.setdefault(("person", person), []).append((entry, person))
        if leads[entry["id"]] is not None:
            together.setdefault(("lead", leads[entry["id"]]), []).append((entry, person))
    for (kind, _), entries in together.items():
        for (a, person_a), (b, person_b) in combinations(entries, 2):
            lead_a, lead_b = leads[a["id"]], leads[b["id"]]
            if kind == "lead" and person_a != person_b:
                wrong = "false merge"
            elif kind == "person" and (lead_a is None or lead_a != lead_b):
                wrong = "false split"
            else:
                continue
            print(f"  {wrong}: {describe(a, person_a, lead_a)}\n  {' ' * len(wrong)}  {describe(b, person_b, lead_b)}")


def describe(entry: dict[str, Any], person: int, lead: int | None) -> str:
    return (f"entry {entry['id']:>5} person {person:>5} lead {lead} at {entry['date_created']}: "
            f"{entry.get('1.3')!r} {entry.get('1.6')!r}, phone {entry.get('3')!r}, email {entry.get('2')!r}, "
            f"device {entry.get('ip')} {entry.get('user_agent', '').split('(')[-1].rstrip(')')}")


if __name__ == "__main__":
    main()

"""CRM requests per lead during a burst: the real web app, Redis broker and Celery worker, HubSpot faked on loopback.

    python bench/crm_burst.py [--entries 1000] [--batch-size 100] [--concurrency 2]

Posts `--entries` new people as fast as 16 connections can, then waits until every lead's CRM sync is delivered
and counts what reached the fake HubSpot: requests per lead, by endpoint, and contacts, notes and tasks (each must
be exactly one per lead). HubSpot's default private-app budget (100 requests per 10 s) is enforced through Redis as
in production; `--batch-size 0` sends each lead on its own for comparison. Staff texts are log-only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quiet import watched
from bench.stack import POSTGRES_URL, SECRET, entry, environment, free_port, fresh_database, running
from tests.fakes.providers import FakeProviders


def crm_syncs_waiting() -> int:
    engine = create_engine(POSTGRES_URL)
    with engine.connect() as connection:
        waiting = connection.execute(text(
            "SELECT (SELECT count(*) FROM submissions WHERE state = 'received') + "
            "(SELECT count(*) FROM outbox WHERE kind = 'crm_sync' AND state <> 'delivered')")).scalar_one()
    engine.dispose()
    return int(waiting)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    fresh_database()
    with watched() as watch, FakeProviders() as hubspot:
        env = environment()
        env.update(HUBSPOT_TOKEN="bench-token", HUBSPOT_BASE_URL=hubspot.url,  # noqa: S106 (loopback fake)
                   HUBSPOT_CUSTOM_PROPERTIES="true", HUBSPOT_BATCH_SIZE=str(args.batch_size))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with running(["web", "--host", "127.0.0.1", "--port", str(port)], env, f"{base}/healthz"), \
                running(["worker", "--concurrency", str(args.concurrency)], env), \
                httpx.Client(timeout=30, limits=httpx.Limits(max_connections=16)) as client:
            time.sleep(3)  # let the worker connect before the clock starts

            def post(number: int) -> int:
                response = client.post(f"{base}/hooks/gravityforms", content=json.dumps(entry(number)),
                                       headers={"X-Admitflow-Secret": SECRET, "Content-Type": "application/json"})
                return response.status_code

            start = time.monotonic()
            with ThreadPoolExecutor(max_workers=16) as pool:
                statuses = Counter(pool.map(post, range(20_000, 20_000 + args.entries)))
            posted = time.monotonic() - start
            deadline = start + args.timeout
            while crm_syncs_waiting() and time.monotonic() < deadline:
                time.sleep(0.5)
            settled = time.monotonic() - start
        state = hubspot.state
        crm_calls = [call for call in state.calls if call.path.startswith("/crm/")]
    by_endpoint = Counter(f"{call.method} {call.path}" for call in crm_calls)
    print(f"burst of {args.entries} ({dict(statuses)}) posted in {posted:.1f}s, every lead in HubSpot after "
          f"{settled:.1f}s; batch size {args.batch_size}, worker concurrency {args.concurrency}")
    print(f"{'HubSpot requests':>17} {'per lead':>9} {'contacts':>9} {'notes':>6} {'tasks':>6} {'waiting':>8}")
    print(f"{len(crm_calls):>17} {len(crm_calls) / args.entries:>9.3f} {len(state.contacts):>9} "
          f"{len(state.notes):>6} {len(state.tasks):>6} {crm_syncs_waiting():>8}")
    for endpoint, count in by_endpoint.most_common():
        print(f"  {count:>6}  {endpoint}")
    print(watch.verdict())


if __name__ == "__main__":
    main()

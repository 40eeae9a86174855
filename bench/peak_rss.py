"""Peak memory (RSS) of the real `admitflow web` and `admitflow worker` while they take and process a burst.

    python bench/peak_rss.py [--entries 500] [--concurrency N (default: ADMITFLOW_WORKER_CONCURRENCY's default)]

Posts the burst to the web app on PostgreSQL with a Redis broker, waits until the worker has processed every
entry and delivered every outbox row (CRM and SMS log-only: no credentials), then reads each process's VmHWM
and its proportional set size (Pss: what forked processes add up to, their shared pages counted once).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quiet import watched
from bench.stack import (
    POSTGRES_URL,
    SECRET,
    children,
    entry,
    environment,
    free_port,
    fresh_database,
    peak_rss_mb,
    proportional_mb,
    running,
)
from config.settings import Settings


async def burst(url: str, count: int) -> None:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=16), timeout=30) as client:
        numbers = iter(range(1, count + 1))

        async def sender() -> None:
            for number in numbers:
                response = await client.post(url, json=entry(number), headers={"X-Admitflow-Secret": SECRET})
                response.raise_for_status()

        await asyncio.gather(*(sender() for _ in range(16)))


def outstanding() -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_URL)
    with engine.connect() as connection:
        waiting = connection.execute(text(
            "SELECT (SELECT count(*) FROM submissions WHERE state = 'received')"
            " + (SELECT count(*) FROM outbox WHERE state = 'pending')")).scalar_one()
    engine.dispose()
    return int(waiting)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=Settings.model_fields["worker_concurrency"].default)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    fresh_database()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = environment()
    with watched() as watch, \
            running(["web", "--host", "127.0.0.1", "--port", str(port)], env, f"{base}/healthz") as web, \
            running(["worker", "--concurrency", str(args.concurrency)], env) as worker:
        started = time.perf_counter()
        asyncio.run(burst(f"{base}/hooks/gravityforms", args.entries))
        deadline = time.monotonic() + args.timeout
        while (left := outstanding()) and time.monotonic() < deadline:
            time.sleep(0.5)
        elapsed = time.perf_counter() - started
        named = [("web", web.pid), ("worker (main)", worker.pid)]
        named += [(f"worker child {n}", pid) for n, pid in enumerate(children(worker.pid), 1)]
        rows = [(name, peak_rss_mb(pid), proportional_mb(pid)) for name, pid in named]
    print(f"{args.entries} entries processed in {elapsed:.1f} s ({left} left unprocessed)")
    print(f"{'process':<16} {'peak RSS MiB':>12} {'Pss MiB':>8}")
    for name, rss, pss in rows:
        print(f"{name:<16} {rss:>12.0f} {pss:>8.0f}")
    workers = [(rss, pss) for name, rss, pss in rows if name.startswith("worker")]
    print(f"{'worker total':<16} {sum(rss for rss, _ in workers):>12.0f} {sum(pss for _, pss in workers):>8.0f}")
    print(watch.verdict())


if __name__ == "__main__":
    main()

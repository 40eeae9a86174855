"""Webhook accept latency and throughput against the real `admitflow web` on PostgreSQL, with a Redis broker.

    python bench/webhook_latency.py [--rate 200] [--count 2000] [--concurrency 32] [--web-workers 1]

Two runs on a fresh database: an open loop at a fixed rate (latency from each request's scheduled send time, so a
slow server cannot hide its queueing) and a closed loop at saturation. Every entry is new: stored and committed
before the 202, its task published after it. No worker runs, so the measure is the intake alone. Loopback only;
bounded in count. Failed requests are counted by status code or transport error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import (
    SECRET,
    children,
    entry,
    environment,
    free_port,
    fresh_database,
    peak_rss_mb,
    percentile,
    running,
)

HEADERS = {"X-Admitflow-Secret": SECRET}
ERRORS: Counter[str] = Counter()  # what the failed requests got: a status code, or the transport error


def _failed(response: httpx.Response) -> bool:
    if response.status_code == 202:
        return False
    ERRORS[str(response.status_code)] += 1
    return True


async def fixed_rate(url: str, rate: float, count: int, first_id: int) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()

        async def one(number: int) -> None:
            nonlocal errors
            scheduled = started + number / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                response = await client.post(url, json=entry(first_id + number), headers=HEADERS)
            except httpx.TransportError as exc:
                errors += 1
                ERRORS[type(exc).__name__] += 1
                return
            latencies.append(time.perf_counter() - scheduled)
            errors += _failed(response)

        await asyncio.gather(*(one(number) for number in range(count)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, errors


async def saturation(url: str, concurrency: int, count: int, first_id: int) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    numbers = iter(range(count))
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency), timeout=30) as client:
        started = time.perf_counter()

        async def sender() -> None:
            nonlocal errors
            for number in numbers:
                sent = time.perf_counter()
                try:
                    response = await client.post(url, json=entry(first_id + number), headers=HEADERS)
                except httpx.TransportError as exc:
                    errors += 1
                    ERRORS[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                errors += _failed(response)

        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--web-workers", type=int, default=1, help="admitflow web --workers")
    args = parser.parse_args()
    fresh_database()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = ["web", "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.web_workers)]
    with running(command, environment(), f"{base}/healthz") as web:
        url = f"{base}/hooks/gravityforms"
        asyncio.run(saturation(url, 8, 200, 10_000_000))  # warm up the pool and the code paths
        runs = [(f"fixed {args.rate:g} req/s", asyncio.run(fixed_rate(url, args.rate, args.count, 1))),
                (f"saturation, {args.concurrency} conns",
                 asyncio.run(saturation(url, args.concurrency, args.count, 1_000_000)))]
        # With several workers, the server processes are the supervisor's children.
        rss = max(peak_rss_mb(pid) for pid in (children(web.pid) if args.web_workers > 1 else [web.pid]))
    print(f"{'run':<24} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for name, (latencies, elapsed, errors) in runs:
        print(f"{name:<24} {len(latencies) + errors:>8} {errors:>6} {len(latencies) / elapsed:>8.1f} "
              f"{percentile(latencies, 0.5) * 1000:>7.1f} {percentile(latencies, 0.99) * 1000:>7.1f} "
              f"{max(latencies) * 1000:>7.1f}")
    print(f"web peak RSS {rss:.0f} MiB" + (" (the largest server process)" if args.web_workers > 1 else ""))
    if ERRORS:
        print("errors: " + ", ".join(f"{kind} x{count}" for kind, count in ERRORS.most_common()))


if __name__ == "__main__":
    main()

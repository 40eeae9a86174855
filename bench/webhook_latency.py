"""Webhook accept latency of `admitflow web` against a reference receiver, in the same run, on PostgreSQL and Redis.

    python bench/webhook_latency.py [--rate 200] [--count 2000] [--runs 5] [--idle 60] [--web-workers 1]

The reference (bench/reference_receiver.py) does the least a safe receiver can: check the secret, commit one
INSERT of the raw body, LPUSH its id, answer 202. Both servers run at once on a fresh database; after a warm-up
both sit idle for --idle seconds (stalls showed after idle), then --runs rounds each post --count entries at a
fixed rate to one server and then the other (admitflow first in the first round, alternating after), latency
measured from each request's scheduled send time so a slow server cannot hide its queueing. A closed loop at
saturation follows. No admitflow worker runs: the measure is the intake alone. Every entry is new.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quiet import watched
from bench.stack import (
    POSTGRES_URL,
    REDIS_URL,
    REPO,
    SECRET,
    children,
    cpu_seconds,
    entry,
    environment,
    free_port,
    fresh_database,
    peak_rss_mb,
    percentile,
    running,
    wait_ready,
)

HEADERS = {"X-Admitflow-Secret": SECRET, "Content-Type": "application/json"}
ERRORS: Counter[str] = Counter()  # what the failed requests got: a status code, or the transport error



def _bodies(first_id: int, count: int) -> list[bytes]:
    """Every request body made before the clock starts: the load generator's own work stays out of the figures."""
    return [json.dumps(entry(first_id + number)).encode() for number in range(count)]


async def _post(client: aiohttp.ClientSession, url: str, body: bytes) -> bool:
    """Send one entry; True when the server did not accept it (the reason is counted in ERRORS)."""
    try:
        async with client.post(url, data=body, headers=HEADERS) as response:
            await response.read()
            if response.status == 202:
                return False
            ERRORS[str(response.status)] += 1
            return True
    except (TimeoutError, aiohttp.ClientError) as exc:
        ERRORS[type(exc).__name__] += 1
        return True


def _client(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                 timeout=aiohttp.ClientTimeout(total=30))


async def fixed_rate(url: str, rate: float, count: int, first_id: int) -> tuple[list[float], float, int]:
    """Request n is sent at start + n / rate whatever the server did with the earlier ones (an open loop); its
    latency runs from that scheduled time, so time a request waited for a connection counts against the server."""
    bodies = _bodies(first_id, count)
    latencies: list[float] = []
    errors = 0
    async with _client(256) as client:
        started = time.perf_counter()

        async def one(number: int) -> None:
            nonlocal errors
            scheduled = started + number / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            if await _post(client, url, bodies[number]):
                errors += 1
            else:
                latencies.append(time.perf_counter() - scheduled)

        await asyncio.gather(*(one(number) for number in range(count)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, errors


async def saturation(url: str, concurrency: int, count: int, first_id: int) -> tuple[list[float], float, int]:
    """A closed loop: `concurrency` senders, each posting its next entry as soon as the last was answered."""
    bodies = iter(_bodies(first_id, count))
    latencies: list[float] = []
    errors = 0
    async with _client(concurrency) as client:
        started = time.perf_counter()

        async def sender() -> None:
            nonlocal errors
            for body in bodies:
                sent = time.perf_counter()
                if await _post(client, url, body):
                    errors += 1
                else:
                    latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, errors


Result = tuple[list[float], float, int]


def measured(run: Coroutine[Any, Any, Result]) -> Result:
    """Run one timed load with the load generator's own garbage collector off. Left on, a full collection in this
    process (86-108 ms, seen at the start of the run that followed the other server's) delays every request
    scheduled meanwhile, and the figure blames whichever server was being measured."""
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(run)
    finally:
        gc.enable()


def row(name: str, result: Result) -> str:
    latencies, elapsed, errors = result
    return (f"{name:<34} {len(latencies) + errors:>8} {errors:>6} {len(latencies) / elapsed:>8.1f} "
            f"{percentile(latencies, 0.5) * 1000:>7.1f} {percentile(latencies, 0.99) * 1000:>7.1f} "
            f"{max(latencies) * 1000:>7.1f}")


def p99(result: Result) -> float:
    return percentile(result[0], 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5, help="rounds, each one run per server")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds both servers sit idle before round 1")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--web-workers", type=int, default=1, help="admitflow web --workers")
    args = parser.parse_args()
    fresh_database()
    port, reference_port = free_port(), free_port()
    base, reference_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{reference_port}"
    command = ["web", "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.web_workers)]
    reference = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "reference_receiver.py"), "--port", str(reference_port),
         "--database-url", POSTGRES_URL, "--redis-url", REDIS_URL, "--secret", SECRET], cwd=REPO)
    rounds: list[tuple[Result, Result]] = []
    cpu = {"admitflow": 0.0, "reference": 0.0}  # seconds each server's processes used during its timed runs
    try:
        wait_ready(reference, f"{reference_base}/healthz")
        with running(command, environment(), f"{base}/healthz") as web:
            urls = {"admitflow": f"{base}/hooks/gravityforms", "reference": f"{reference_base}/hooks/gravityforms"}
            for url in urls.values():
                asyncio.run(saturation(url, 8, 200, 10_000_000))  # warm up pools and code paths
            print(f"both servers warmed up; idle for {args.idle:g} s", flush=True)
            time.sleep(args.idle)
            with watched() as watch:
                for number in range(args.runs):
                    first = 1 + number * 2 * args.count
                    order = ["admitflow", "reference"] if number % 2 == 0 else ["reference", "admitflow"]
                    results = {}
                    for offset, name in zip((0, args.count), order, strict=True):
                        pid = web.pid if name == "admitflow" else reference.pid
                        before = cpu_seconds(pid)
                        results[name] = measured(fixed_rate(urls[name], args.rate, args.count, first + offset))
                        cpu[name] += cpu_seconds(pid) - before
                    rounds.append((results["admitflow"], results["reference"]))
                saturated = {name: measured(saturation(url, args.concurrency, args.count, 5_000_000 + offset))
                             for offset, (name, url) in zip((0, args.count), urls.items(), strict=True)}
            # With several workers, the server processes are the supervisor's children.
            rss = max(peak_rss_mb(pid) for pid in (children(web.pid) if args.web_workers > 1 else [web.pid]))
    finally:
        reference.terminate()
        reference.wait(timeout=15)
    print(f"{'run':<34} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    ratios = []
    for number, (ours, theirs) in enumerate(rounds, start=1):
        print(row(f"round {number} admitflow {args.rate:g} req/s", ours))
        print(row(f"round {number} reference {args.rate:g} req/s", theirs))
        ratios.append(p99(ours) / p99(theirs))
    for name, result in saturated.items():
        print(row(f"{name} saturation, {args.concurrency} conns", result))
    print("p99 admitflow / reference by round: " + ", ".join(f"{ratio:.2f}" for ratio in ratios)
          + f"; worst {max(ratios):.2f}, median {statistics.median(ratios):.2f} (target <= 1.5 in every round)")
    requests = args.runs * args.count
    print(f"CPU per request at {args.rate:g} req/s: admitflow {cpu['admitflow'] / requests * 1000:.2f} ms, "
          f"reference {cpu['reference'] / requests * 1000:.2f} ms (each server's processes, all rounds)")
    print(f"web peak RSS {rss:.0f} MiB" + (" (the largest server process)" if args.web_workers > 1 else ""))
    if ERRORS:
        print("errors: " + ", ".join(f"{kind} x{count}" for kind, count in ERRORS.most_common()))
    print(watch.verdict())


if __name__ == "__main__":
    main()

"""The real processes the benchmarks measure: a fresh PostgreSQL database, `admitflow web`, `admitflow worker`.

Loopback only. PostgreSQL and Redis must already run on 127.0.0.1 (BENCH_POSTGRES_URL, BENCH_REDIS_URL).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/admitflow_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
SECRET = "bench-webhook-secret"  # noqa: S105 (fictional, loopback only)
# Fixed throwaway keys: every entry is generated and fictional.
KEYS = {
    "ADMITFLOW_ENCRYPTION_KEYS": "mH5GJ0QK3N0yC1qk2mYB0q5tq1N4m3E1mZpX0sB9a1A=",
    "ADMITFLOW_BLIND_INDEX_KEY": "dGVzdC1ibGluZC1pbmRleC1rZXktMzItYnl0ZXMtbG9uZyEhIQ==",
}


def environment(broker: bool = True) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("HUBSPOT_", "TWILIO_", "SALESFORCE_", "GRAVITYFORMS_", "STATUS_"))}
    env.update(KEYS, DATABASE_URL=POSTGRES_URL, CELERY_BROKER_URL=REDIS_URL if broker else "",
               GRAVITYFORMS_WEBHOOK_SECRET=SECRET, ADMITFLOW_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"))
    return env


def admitflow() -> list[str]:
    """The CLI of this checkout (run from REPO), whichever copy of admitflow is installed."""
    return [sys.executable, "-m", "worker.cli"]


def fresh_database() -> None:
    """Drop and create the bench database, migrate it and register the example form."""
    recreate_database(POSTGRES_URL)
    env = environment()
    subprocess.run([*admitflow(), "migrate"], env=env, cwd=REPO, check=True, capture_output=True)
    subprocess.run([*admitflow(), "forms", "add", str(REPO / "examples/gravityforms/form.json")], env=env, cwd=REPO,
                   check=True, capture_output=True)
    import redis

    from config.celery_app import WORK_QUEUES

    redis.Redis.from_url(REDIS_URL).delete(*WORK_QUEUES)


def recreate_database(url: str) -> None:
    """Drop the database `url` names, if it exists, and create it empty."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(process: subprocess.Popen[bytes], ready_url: str) -> None:
    """Wait until the server at ready_url can store a webhook; raise when it exits or 30 s pass. (Benches run no
    beat, so /healthz is 503 for its heartbeat while `accepting_webhooks` is true.)"""
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(ready_url, timeout=1).json().get("accepting_webhooks"):
                return
        except (httpx.TransportError, ValueError):
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, process.args))} did not become ready")  # type: ignore[arg-type]
        time.sleep(0.2)


@contextmanager
def running(args: list[str], env: dict[str, str], ready_url: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([*admitflow(), *args], env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        if ready_url is not None:
            wait_ready(process, ready_url)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB, read while it is still running."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def proportional_mb(pid: int) -> float:
    """The process's proportional set size (Pss, pages shared with other processes divided among them), in MiB:
    what a pool of forked processes costs summed without counting their shared pages over and over."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no Pss for process {pid}")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the process, of its reaped children, and of its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")

    def own(one: int, reaped: bool) -> float:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return 0.0
        # After the ")": state is field 3, so utime/stime (14, 15) and cutime/cstime (16, 17) are at 11..14.
        used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
        return used / ticks

    total, todo = own(pid, True), list(children(pid))
    while todo:
        child = todo.pop()
        total += own(child, True)
        try:
            todo.extend(children(child))
        except FileNotFoundError:
            continue
    return total


def entry(number: int) -> dict[str, Any]:
    """A fictional entry of the example form; every number is a different person (555-01xx phones)."""
    return {
        "id": str(number), "form_id": "1", "date_created": "2026-11-20 14:02:11", "status": "active",
        "ip": f"2001:db8::{number:x}", "user_agent": "Mozilla/5.0 (bench)",
        "1.3": "Jordan", "1.6": f"Sample{letters(number)}", "2": f"person{number}@example.org",
        "3": f"+1617555{number % 10000:04d}", "4": "I would like to talk to someone about treatment options.",
        "5.1": "1",
    }


def letters(number: int) -> str:
    """A number spelt in letters: digits in a name would (rightly) get the entry screened as junk."""
    word = ""
    while True:
        number, digit = divmod(number, 26)
        word = chr(ord("a") + digit) + word
        if number == 0:
            return word


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank, as worker/ops/reports.py computes it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]

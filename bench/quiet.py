"""Whether a figure was taken on a quiet machine: the load average before and after, and the CPU that processes
other than the bench's own (its process tree, PostgreSQL and Redis) used while it ran.

A figure taken while another process held a core measures that process too, so `Watch.verdict` refuses it, unless
BENCH_ALLOW_BUSY=1 says to print it marked as provisional.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVICE_COMMANDS = {"postgres", "redis-server"}
# Other processes may use this much of a core, on average over the run, before a figure is refused.
MAX_OTHER_CORES = float(os.environ.get("BENCH_MAX_OTHER_CORES", "0.25"))


class BusyMachine(SystemExit):
    """Another process used a share of a core while the figure was taken: the bench ends with this message and
    exit status 1, no traceback."""


def _busy_ticks() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return user + nice + system + irq + softirq + steal


def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command, CPU ticks of it and its reaped children)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        command = text[text.index("(") + 1:text.rindex(")")]
        rest = text[text.rindex(")") + 2:].split()
        found[int(entry.name)] = (int(rest[1]), command, sum(int(value) for value in rest[11:15]))
    return found


def _ours(processes: dict[int, tuple[int, str, int]], root: int) -> int:
    """CPU ticks of the bench's process tree and of the services it measures (their children included)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _command, _ticks) in processes.items():
        children.setdefault(parent, []).append(pid)
    tops = [root, *(pid for pid, (parent, command, _) in processes.items()
                    if command in SERVICE_COMMANDS and processes.get(parent, (0, "", 0))[1] not in SERVICE_COMMANDS)]
    total, seen, stack = 0, set(), tops
    while stack:
        pid = stack.pop()
        if pid in seen or pid not in processes:
            continue
        seen.add(pid)
        total += processes[pid][2]
        stack.extend(children.get(pid, []))
    return total


@dataclass
class Watch:
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wall_seconds: float = 0.0
    other_cores: float = 0.0  # average cores used by other processes over the run
    busiest_other_cores: float = 0.0  # the most in any one sampling window
    _windows: list[float] = field(default_factory=list)

    def describe(self) -> str:
        before = ", ".join(f"{value:.2f}" for value in self.load_before)
        after = ", ".join(f"{value:.2f}" for value in self.load_after)
        return (f"load average before {before}; after {after}; other processes used {self.other_cores:.2f} of a "
                f"core on average (at most {self.busiest_other_cores:.2f} in one second) over "
                f"{self.wall_seconds:.0f} s")

    def verdict(self) -> str:
        """The line to print with the figure; raises BusyMachine when the machine was not quiet enough."""
        if self.other_cores <= MAX_OTHER_CORES:
            return f"quiet machine: {self.describe()}"
        message = f"not a quiet machine: {self.describe()} (limit {MAX_OTHER_CORES} core, BENCH_MAX_OTHER_CORES)"
        if os.environ.get("BENCH_ALLOW_BUSY") == "1":
            return f"PROVISIONAL, {message}"
        raise BusyMachine(f"{message}: figure refused; stop the other work, or set BENCH_ALLOW_BUSY=1 to see it anyway")


@contextmanager
def watched(sample_seconds: float = 1.0) -> Iterator[Watch]:
    """Watch the machine while the body runs; read `verdict()` after it."""
    watch = Watch(load_before=os.getloadavg())
    stop = threading.Event()
    root = os.getpid()

    def sample() -> None:
        last_busy, last_ours, last_at = _busy_ticks(), _ours(_processes(), root), time.monotonic()
        while not stop.wait(sample_seconds):
            busy, ours, at = _busy_ticks(), _ours(_processes(), root), time.monotonic()
            other = max(0, (busy - last_busy) - (ours - last_ours)) / CLOCK_TICKS
            watch._windows.append(other / (at - last_at))
            last_busy, last_ours, last_at = busy, ours, at

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.monotonic()
    sampler.start()
    try:
        yield watch
    finally:
        stop.set()
        sampler.join()
        watch.wall_seconds = time.monotonic() - started
        watch.load_after = os.getloadavg()
        if watch._windows:
            watch.other_cores = sum(watch._windows) / len(watch._windows)
            watch.busiest_other_cores = max(watch._windows)

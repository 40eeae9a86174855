"""A request budget shared by every worker through Redis, and a pause for all of them after a provider's 429.

Counters are fixed windows (`INCR` on a key per window, expiring after it), so the budget holds across processes
without a lock; a 429 stores the time until which nobody may call, so one worker's `Retry-After` stops them all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from integrations.errors import RateLimited


class Store(Protocol):
    """The part of a Redis client the limiter uses."""

    def incr(self, name: str) -> int: ...

    def decr(self, name: str) -> int: ...

    def expire(self, name: str, time: int) -> object: ...

    def get(self, name: str) -> object: ...

    def set(self, name: str, value: str, *, px: int) -> object: ...


@dataclass(frozen=True)
class Window:
    """At most `limit` calls in each `seconds`-long window (windows start at multiples of `seconds`)."""

    seconds: int
    limit: int


class SharedRateLimit:
    """Calls to one service, counted per kind ("request", "search"...) across every process sharing the Redis.

    `limits` maps a kind to its windows; a call names the kinds it counts against.
    """

    def __init__(
        self,
        redis: Store,
        service: str,
        limits: Mapping[str, Sequence[Window]],
        *,
        max_wait: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.redis, self.service, self.limits = redis, service, limits
        self.prefix = f"admitflow:rate:{service.lower()}"
        self.max_wait, self.clock, self.sleep = max_wait, clock, sleep

    @property
    def blocked_key(self) -> str:
        return f"{self.prefix}:blocked-until"

    def wait_for_slot(self, *kinds: str) -> None:
        """Return once this call fits every window of `kinds` and no 429 pause is running; sleep for that if it
        comes within `max_wait`. Otherwise raise `RateLimited` with the wait, for the worker to retry later."""
        deadline = self.clock() + self.max_wait
        while True:
            now = self.clock()
            wait = self.blocked_until() - now
            if wait <= 0:
                wait = self._take(kinds, now)
                if wait <= 0:
                    return
            if now + wait > deadline:
                raise RateLimited(f"the shared {self.service} request budget is used up; will retry",
                                  retry_after=wait)
            self.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Stop every worker's calls for `seconds` (a 429's Retry-After). Only ever lengthens a running pause."""
        until = self.clock() + seconds
        if until > self.blocked_until():
            self.redis.set(self.blocked_key, repr(until), px=math.ceil(seconds * 1000) + 1000)

    def blocked_until(self) -> float:
        value = self.redis.get(self.blocked_key)
        if value is None:
            return 0.0
        try:
            return float(value.decode() if isinstance(value, bytes) else str(value))
        except ValueError:
            return 0.0

    def _take(self, kinds: Sequence[str], now: float) -> float:
        """Count the call in each window; if one is full, give back what was taken and return the seconds until
        that window ends, else 0."""
        taken: list[str] = []
        for kind in kinds:
            for window in self.limits.get(kind, ()):
                start = int(now // window.seconds) * window.seconds
                key = f"{self.prefix}:{kind}:{window.seconds}:{start}"
                used = int(self.redis.incr(key))
                taken.append(key)
                if used == 1:
                    self.redis.expire(key, window.seconds + 5)
                if used > window.limit:
                    for held in taken:
                        self.redis.decr(held)
                    return start + window.seconds - now
        return 0.0

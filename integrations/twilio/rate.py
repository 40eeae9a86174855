"""Keeping every worker together under the center number's sending rate, with a counter per second in Redis.

A US toll-free number sends about 3 messages per second; Twilio queues what is sent faster, so a burst would
delay the alert that matters behind the others. https://help.twilio.com/articles/115002943027
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from integrations.errors import RateLimited


class Counter(Protocol):
    """The part of a Redis client the limiter uses."""

    def incr(self, name: str) -> int: ...

    def expire(self, name: str, time: int) -> object: ...


class SendRate:
    """At most `per_second` sends a second for one sender across every process sharing the Redis database."""

    def __init__(
        self,
        redis: Counter,
        sender: str,
        per_second: int,
        *,
        max_wait: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.redis, self.key, self.per_second = redis, f"admitflow:send-rate:{sender}", per_second
        self.max_wait, self.clock, self.sleep = max_wait, clock, sleep

    def wait_for_slot(self) -> None:
        """Return once this send fits in the current second; wait for the next one if not. Raises `RateLimited`
        (retried by the worker) when no slot comes within `max_wait` seconds."""
        deadline = self.clock() + self.max_wait
        while True:
            now = self.clock()
            second = int(now)
            key = f"{self.key}:{second}"
            used = int(self.redis.incr(key))
            if used == 1:
                self.redis.expire(key, 5)
            if used <= self.per_second:
                return
            if now >= deadline:
                raise RateLimited("the center number's sending rate is used up by other alerts; will retry",
                                  retry_after=1.0)
            self.sleep(min(second + 1 - now, deadline - now))

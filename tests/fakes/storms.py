"""The loopback HubSpot/Twilio fake with one more failure: answers held past the caller's timeout.

The caller cannot tell a timed-out write that happened from one that did not; the storm can do either.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.providers import FakeProviders, ProviderState
from tests.fakes.providers import _Handler as ProviderHandler


@dataclass
class Storm:
    """Shares of requests, by path prefix, whose answers are held for `hold_seconds`: after the fake did the work
    (stored the record, sent the text), or instead of doing it."""

    hold_seconds: float = 0.0
    after_work: dict[str, float] = field(default_factory=dict)
    without_work: dict[str, float] = field(default_factory=dict)
    held: int = 0

    def share(self, shares: dict[str, float], path: str) -> float:
        return next((rate for prefix, rate in shares.items() if path.startswith(prefix)), 0.0)


class _StormyHandler(ProviderHandler):
    server: StormyProviders

    def _route(self, state: ProviderState, body: Any) -> None:
        storm = self.server.storm
        if random.random() < storm.share(storm.without_work, self.path):
            storm.held += 1
            self._send(504, {"status": "error", "message": "held by the storm"})
            self._delay = storm.hold_seconds
            return
        super()._route(state, body)
        if random.random() < storm.share(storm.after_work, self.path):
            storm.held += 1
            self._delay = max(self._delay, storm.hold_seconds)


class StormyProviders(FakeProviders):
    """FakeProviders (its `state.failure_rate` answers 429s and 502s) plus `storm`: answers held past a timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.RequestHandlerClass = _StormyHandler
        self.storm = Storm()

"""The loopback HubSpot/Twilio fake with the vendors' worst habits: answers held past the caller's timeout, and
creates that are stored and then lose their answer (held past the timeout, the connection reset, or a 5xx after
the commit).

The caller cannot tell a timed-out write that happened from one that did not; the storm can do either.
"""

from __future__ import annotations

import random
import re
from collections import Counter
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
    # Shares of creates, by path prefix, that are stored and then lose their answer; `lost` counts them by kind
    # of create and by how the answer was lost.
    lost_answers: dict[str, float] = field(default_factory=dict)
    lost: Counter[str] = field(default_factory=Counter)
    # Scripted answers, in order: the first entry whose pattern matches "METHOD /path" is used once. "late": the work
    # is done and the answer held for `hold_seconds`; "429": refused with Retry-After: 1, nothing done.
    script: list[tuple[str, str]] = field(default_factory=list)

    def share(self, shares: dict[str, float], path: str) -> float:
        return next((rate for prefix, rate in shares.items() if path.startswith(prefix)), 0.0)


class _StormyHandler(ProviderHandler):
    server: StormyProviders

    def _route(self, state: ProviderState, body: Any) -> None:
        storm = self.server.storm
        request = f"{self.command} {self.path.split('?', 1)[0]}"
        scripted = next((n for n, (pattern, _) in enumerate(storm.script) if re.fullmatch(pattern, request)), None)
        if scripted is not None:
            if storm.script.pop(scripted)[1] == "429":
                self._send(429, {"status": "error", "category": "RATE_LIMITS"}, {"Retry-After": "1"})
            else:
                super()._route(state, body)
                self._delay = storm.hold_seconds
            return
        create = _CREATE.fullmatch(f"{self.command} {self.path.split('?', 1)[0]}")
        if create and random.random() < storm.share(storm.lost_answers, self.path):
            super()._route(state, body)
            if self._answer[0] >= 300:
                return  # refused (a 409): nothing stored, nothing to lose
            how = random.choice(("held past the timeout", "connection reset", "5xx after the commit"))
            storm.lost[create.group(1) or create.group(2)] += 1
            storm.lost[how] += 1
            if how == "held past the timeout":
                self._delay = max(self._delay, storm.hold_seconds)
            elif how == "connection reset":
                self._reset = True
            else:
                self._send(random.choice((500, 502, 503)), {"status": "error", "message": "internal error"})
            return
        if random.random() < storm.share(storm.without_work, self.path):
            storm.held += 1
            self._send(504, {"status": "error", "message": "held by the storm"})
            self._delay = storm.hold_seconds
            return
        super()._route(state, body)
        if random.random() < storm.share(storm.after_work, self.path):
            storm.held += 1
            self._delay = max(self._delay, storm.hold_seconds)


# What creates a record or sends something: HubSpot object creates and batch creates and upserts, Twilio texts and
# calls. Group 1 names the kind.
_CREATE = re.compile(r"POST /crm/v3/objects/(\w+)(?:/batch/(?:create|upsert))?|POST /2010-04-01/Accounts/\w+/(?:"
                     r"(Messages|Calls))\.json")


class StormyProviders(FakeProviders):
    """FakeProviders (its `state.failure_rate` answers 429s and 502s) plus `storm`: answers held past a timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.RequestHandlerClass = _StormyHandler
        self.storm = Storm()

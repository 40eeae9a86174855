from __future__ import annotations

from collections import Counter as Tally

import pytest
import redis
import responses

from integrations.errors import RateLimited
from integrations.hubspot.client import HubSpotCRM, hubspot_rate_limit
from integrations.ratelimit import SharedRateLimit, Store, Window

API = "https://api.hubapi.com"


class FakeRedis:
    def __init__(self) -> None:
        self.counts: Tally[str] = Tally()
        self.values: dict[str, str] = {}
        self.expiring: dict[str, int] = {}

    def incr(self, name: str) -> int:
        self.counts[name] += 1
        return self.counts[name]

    def decr(self, name: str) -> int:
        self.counts[name] -= 1
        return self.counts[name]

    def expire(self, name: str, time: int) -> bool:
        self.expiring[name] = time
        return True

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def set(self, name: str, value: str, *, px: int) -> bool:
        self.values[name] = value
        self.expiring[name] = px
        return True


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def hubspot_limit(store: Store, clock: Clock, *, burst: int = 100, searches: int = 4) -> SharedRateLimit:
    limit = hubspot_rate_limit(store, burst, searches)
    limit.clock, limit.sleep = clock, clock.sleep
    return limit


def test_calls_within_the_burst_limit_go_at_once() -> None:
    store, clock = FakeRedis(), Clock(1000.0)
    limit = hubspot_limit(store, clock)

    for _ in range(100):
        limit.wait_for_slot("request")

    assert clock.slept == []
    assert store.counts == {"admitflow:rate:hubspot:request:10:1000": 100}
    assert store.expiring == {"admitflow:rate:hubspot:request:10:1000": 15}


def test_the_call_after_the_burst_limit_waits_for_the_next_ten_second_window() -> None:
    store, clock = FakeRedis(), Clock(1006.5)
    limit = hubspot_limit(store, clock)
    for _ in range(100):
        limit.wait_for_slot("request")

    limit.wait_for_slot("request")

    assert clock.slept == [3.5]
    assert store.counts["admitflow:rate:hubspot:request:10:1010"] == 1
    assert store.counts["admitflow:rate:hubspot:request:10:1000"] == 100, "a refused call gives its slot back"


def test_searches_are_held_to_their_own_per_second_limit_and_count_towards_the_burst() -> None:
    store, clock = FakeRedis(), Clock(1000.25)
    limit = hubspot_limit(store, clock, searches=4)

    for _ in range(5):
        limit.wait_for_slot("request", "search")

    assert clock.slept == [0.75]
    assert store.counts["admitflow:rate:hubspot:search:1:1000"] == 4
    assert store.counts["admitflow:rate:hubspot:search:1:1001"] == 1
    assert store.counts["admitflow:rate:hubspot:request:10:1000"] == 5


def test_a_wait_longer_than_the_worker_may_sleep_is_handed_back_as_rate_limited() -> None:
    store, clock = FakeRedis(), Clock(1000.0)
    limit = hubspot_limit(store, clock, burst=2)
    limit.wait_for_slot("request")
    limit.wait_for_slot("request")

    with pytest.raises(RateLimited) as caught:
        limit.wait_for_slot("request")

    assert caught.value.retry_after == pytest.approx(10.0) and not caught.value.permanent
    assert clock.slept == [], "it does not sleep towards a slot it cannot reach"
    assert "HubSpot" in caught.value.message


def test_a_pause_after_a_429_holds_every_caller_until_it_ends() -> None:
    store, clock = FakeRedis(), Clock(1000.0)
    first, second = hubspot_limit(store, clock), hubspot_limit(store, clock)

    first.pause(2.0)
    second.wait_for_slot("request")

    assert clock.slept == [2.0]
    assert store.values["admitflow:rate:hubspot:blocked-until"] == "1002.0"


def test_a_shorter_pause_never_cuts_a_longer_one_short() -> None:
    store, clock = FakeRedis(), Clock(1000.0)
    limit = hubspot_limit(store, clock)

    limit.pause(4.0)
    limit.pause(1.0)

    with pytest.raises(RateLimited) as caught:
        SharedRateLimit(store, "HubSpot", {}, max_wait=3.0, clock=clock, sleep=clock.sleep).wait_for_slot("request")
    assert caught.value.retry_after == pytest.approx(4.0)


def test_a_limit_of_zero_is_not_enforced() -> None:
    store, clock = FakeRedis(), Clock(1000.0)
    limit = hubspot_limit(store, clock, burst=0, searches=0)

    for _ in range(500):
        limit.wait_for_slot("request", "search")

    assert clock.slept == [] and not store.counts


@responses.activate
def test_hubspot_answering_429_pauses_every_worker_for_its_retry_after() -> None:
    responses.post(f"{API}/crm/v3/objects/notes", status=429, headers={"Retry-After": "3"},
                   json={"status": "error", "category": "RATE_LIMITS"})
    store, clock = FakeRedis(), Clock(1000.0)
    crm = HubSpotCRM("pat-na1-test", rate_limit=hubspot_limit(store, clock))

    with pytest.raises(RateLimited):
        crm.request("POST", "/crm/v3/objects/notes", json={})

    other_worker = hubspot_limit(store, clock)
    other_worker.wait_for_slot("request")
    assert clock.slept == [3.0]


@responses.activate
def test_a_429_without_retry_after_pauses_for_one_burst_window() -> None:
    responses.post(f"{API}/crm/v3/objects/contacts/search", status=429,
                   json={"status": "error", "category": "RATE_LIMITS"})
    store, clock = FakeRedis(), Clock(1000.0)
    crm = HubSpotCRM("pat-na1-test", rate_limit=hubspot_limit(store, clock))

    with pytest.raises(RateLimited):
        crm.request("POST", "/crm/v3/objects/contacts/search", json={})

    assert store.values["admitflow:rate:hubspot:blocked-until"] == "1010.0"
    assert store.counts["admitflow:rate:hubspot:search:1:1000"] == 1, "a search takes a search slot"


@pytest.mark.services
def test_workers_sharing_a_redis_share_one_budget_and_one_pause(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    clock = Clock(2_000_000_000.0)
    workers = [hubspot_limit(client, clock, burst=10) for _ in range(3)]

    for n in range(10):
        workers[n % 3].wait_for_slot("request")
    with pytest.raises(RateLimited) as caught:
        SharedRateLimit(client, "HubSpot", {"request": [Window(10, 10)]}, max_wait=1.0,
                        clock=clock, sleep=clock.sleep).wait_for_slot("request")
    assert caught.value.retry_after == pytest.approx(10.0)
    assert int(client.get("admitflow:rate:hubspot:request:10:2000000000") or 0) == 10
    assert 0 < client.ttl("admitflow:rate:hubspot:request:10:2000000000") <= 15

    workers[0].pause(1.5)
    workers[1].wait_for_slot()
    assert clock.slept == [1.5]
    assert 0 < client.pttl("admitflow:rate:hubspot:blocked-until") <= 2500

from __future__ import annotations

from collections import Counter as Tally

import pytest
import responses

from integrations.errors import RateLimited
from integrations.twilio.client import TwilioMessenger
from integrations.twilio.rate import SendRate

FROM = "+18555550100"


class FakeRedis:
    def __init__(self) -> None:
        self.counts: Tally[str] = Tally()
        self.expiring: dict[str, int] = {}

    def incr(self, name: str) -> int:
        self.counts[name] += 1
        return self.counts[name]

    def expire(self, name: str, time: int) -> bool:
        self.expiring[name] = time
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


def limiter(redis: FakeRedis, clock: Clock, per_second: int = 3, max_wait: float = 5.0) -> SendRate:
    return SendRate(redis, FROM, per_second, max_wait=max_wait, clock=clock, sleep=clock.sleep)


def test_sends_within_the_rate_go_at_once_and_the_counter_expires() -> None:
    redis, clock = FakeRedis(), Clock(1000.25)

    for _ in range(3):
        limiter(redis, clock).wait_for_slot()

    assert clock.slept == []
    assert redis.counts == {f"admitflow:send-rate:{FROM}:1000": 3}
    assert redis.expiring == {f"admitflow:send-rate:{FROM}:1000": 5}


def test_a_send_over_the_rate_waits_for_the_next_second() -> None:
    redis, clock = FakeRedis(), Clock(1000.25)
    for _ in range(3):
        limiter(redis, clock).wait_for_slot()

    limiter(redis, clock).wait_for_slot()

    assert clock.slept == [0.75]
    assert redis.counts[f"admitflow:send-rate:{FROM}:1001"] == 1


def test_with_no_slot_in_sight_it_gives_up_as_rate_limited_for_the_worker_to_retry() -> None:
    redis, clock = FakeRedis(), Clock(1000.5)
    redis.counts.update({f"admitflow:send-rate:{FROM}:{second}": 99 for second in range(1000, 1010)})

    with pytest.raises(RateLimited) as caught:
        limiter(redis, clock, max_wait=2.0).wait_for_slot()

    assert caught.value.retry_after == 1.0 and not caught.value.permanent
    assert sum(clock.slept) == pytest.approx(2.0)


@responses.activate
def test_the_twilio_messenger_takes_a_slot_before_each_text() -> None:
    url = "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json"
    responses.post(url, json={"sid": "SM1", "status": "queued"}, status=201)
    redis, clock = FakeRedis(), Clock(1000.0)
    messenger = TwilioMessenger("AC00000000000000000000000000000001", "token", FROM,
                                sms_rate=limiter(redis, clock, per_second=1))

    messenger.send_sms("+16175550101", "admitflow: test")
    messenger.send_sms("+16175550102", "admitflow: test")

    assert len(responses.calls) == 2
    assert clock.slept == [1.0]

"""The web process's hand-off thread: committed ids go to the broker in pages, off the request path."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from worker.web.handoff import Handoff


class Pages:
    """A dispatcher that records each page it is handed; the first `failures` calls raise."""

    def __init__(self, failures: int = 0) -> None:
        self.pages: list[list[int]] = []
        self.failures = failures
        self.handed = threading.Event()

    def submission_stored(self, submission_id: int) -> None:
        self.submissions_stored([submission_id])

    def submissions_stored(self, submission_ids: list[int]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the broker is restarting")
        self.pages.append(list(submission_ids))
        self.handed.set()

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None:
        raise AssertionError("the web door hands on submissions only")

    def crm_ready(self, outbox_ids: Iterable[int], *, linger: float = 0.0) -> None:
        raise AssertionError("the web door hands on submissions only")


def test_ids_stored_close_together_go_to_the_broker_as_one_page_in_order() -> None:
    pages = Pages()
    handoff = Handoff(pages, page=50, linger=0.2)
    handoff.start()
    for submission_id in range(1, 8):
        handoff.stored(submission_id)

    assert pages.handed.wait(5)
    handoff.stop()

    assert pages.pages == [[1, 2, 3, 4, 5, 6, 7]]


def test_a_full_page_goes_without_waiting_for_the_linger() -> None:
    pages = Pages()
    handoff = Handoff(pages, page=3, linger=30)
    handoff.start()
    started = time.monotonic()
    for submission_id in range(1, 4):
        handoff.stored(submission_id)

    assert pages.handed.wait(5) and time.monotonic() - started < 5
    handoff.stop()
    assert pages.pages == [[1, 2, 3]]


def test_stopping_hands_on_what_is_waiting_first() -> None:
    pages = Pages()
    handoff = Handoff(pages, page=50, linger=30)
    handoff.start()
    handoff.stored(41)
    handoff.stored(42)

    handoff.stop()

    assert pages.pages == [[41, 42]]


def test_a_broker_that_fails_once_leaves_those_ids_to_the_sweeper_and_the_thread_handing_on_the_next() -> None:
    pages = Pages(failures=1)
    handoff = Handoff(pages, page=1, linger=0)
    handoff.start()
    handoff.stored(1)
    handoff.stored(2)

    assert pages.handed.wait(5)
    handoff.stop()
    assert pages.pages == [[2]]

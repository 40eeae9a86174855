from __future__ import annotations

import pytest

from worker.delivery.dispatch import HISTORY_PAGE_SIZE, HistoryPages


def api_pages(count: int, size: int = 50) -> list[list[int]]:
    return [list(range(start, start + size)) for start in range(1, count * size + 1, size)]


def test_a_history_is_handed_on_in_full_pages_and_its_tail_when_it_ends() -> None:
    handed: list[list[int]] = []
    with HistoryPages(handed.append) as history:
        for page in api_pages(HISTORY_PAGE_SIZE // 50 + 1):
            history.add(page)
        assert [len(each) for each in handed] == [HISTORY_PAGE_SIZE]
    assert [len(each) for each in handed] == [HISTORY_PAGE_SIZE, 50]
    assert [i for each in handed for i in each] == list(range(1, HISTORY_PAGE_SIZE + 51))


def test_what_was_stored_before_an_error_is_handed_on_and_the_error_still_raised() -> None:
    handed: list[list[int]] = []
    with pytest.raises(RuntimeError, match="the API went away"), HistoryPages(handed.append) as history:
        history.add(list(range(1, 51)))
        raise RuntimeError("the API went away")
    assert handed == [list(range(1, 51))]

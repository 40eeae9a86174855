from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.settings import Settings
from config.sites import SiteConfig
from integrations.gravityforms.client import PAGE_SIZE, GravityFormsClient
from tests.conftest import make_entry
from worker.intake.entries import store_entry
from worker.intake.poller import claim_due_forms, poll_form
from worker.leads.processing import process_submission
from worker.store.leases import POLL, keeper
from worker.store.models import Lead, PollCursor, Submission, SubmissionSource

SITE_URL = "https://clinic.example.org"
ENTRIES_URL = f"{SITE_URL}/wp-json/gf/v2/forms/1/entries"
FORM_URL = f"{SITE_URL}/wp-json/gf/v2/forms/1"
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


@pytest.fixture
def site() -> SiteConfig:
    return SiteConfig(name="main", base_url=SITE_URL, consumer_key="ck_test", consumer_secret="cs_test",
                      forms=[{"id": "1"}])  # type: ignore[list-item]


@pytest.fixture
def client() -> GravityFormsClient:
    return GravityFormsClient(SITE_URL, "ck_test", "cs_test")


def gf_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def entries_newest_first(count: int, newest: datetime, start_id: int = 1) -> list[dict[str, Any]]:
    """`count` entries a minute apart, newest first, as GET /forms/1/entries?sorting[direction]=DESC returns."""
    entries = [
        make_entry(start_id + n, date_created=gf_time(newest - timedelta(minutes=count - 1 - n)),
                   **{"3": f"(617) 555-{100 + (start_id + n) % 100:04d}", "2": f"p{start_id + n}@example.org"})
        for n in range(count)
    ]
    return list(reversed(entries))


def serve_pages(entries: list[dict[str, Any]], form_object: dict[str, Any]) -> None:
    responses.get(FORM_URL, json=form_object)

    def page(request: Any) -> tuple[int, dict[str, str], str]:
        query = parse_qs(urlsplit(request.url).query)
        number = int(query["paging[current_page]"][0])
        chunk = entries[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
        return 200, {}, json.dumps({"total_count": str(len(entries)), "entries": chunk})

    responses.add_callback(responses.GET, ENTRIES_URL, callback=page)


def count(session: Session, model: type[Any]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


@responses.activate
def test_the_first_poll_reads_pages_newest_first_back_to_the_lookback_and_stores_each_entry(
    session: Session, settings: Settings, site: SiteConfig, client: GravityFormsClient, form_object: dict[str, Any]
) -> None:
    recent = entries_newest_first(120, newest=NOW - timedelta(minutes=1))
    too_old = entries_newest_first(3, newest=NOW - timedelta(days=3), start_id=500)
    serve_pages(recent + too_old, form_object)

    result = poll_form(session, site, "1", client, settings, now=NOW)

    assert result.error is None and result.seen == 120 and len(result.new_submission_ids) == 120
    entry_calls = [call for call in responses.calls if "/entries" in (call.request.url or "")]
    query = parse_qs(urlsplit(entry_calls[0].request.url).query)
    assert query["sorting[key]"] == ["date_created"] and query["sorting[direction]"] == ["DESC"]
    assert len(entry_calls) == 3  # 50 + 50 + a page that reaches past the cutoff
    assert entry_calls[0].request.headers["Authorization"].startswith("Basic ")
    cursor = session.scalars(select(PollCursor)).one()
    assert cursor.cursor == NOW - timedelta(minutes=1)
    assert cursor.last_success_at == NOW and cursor.next_poll_at == NOW + timedelta(seconds=60)
    assert count(session, Submission) == 120


@responses.activate
def test_the_next_poll_reads_back_to_the_cursor_minus_the_overlap_only(
    session: Session, settings: Settings, site: SiteConfig, client: GravityFormsClient, form_object: dict[str, Any]
) -> None:
    session.add(PollCursor(site="main", form_id="1", cursor=NOW - timedelta(minutes=10), next_poll_at=NOW))
    session.commit()
    late_committed = make_entry(7, date_created=gf_time(NOW - timedelta(minutes=25)))
    behind_overlap = make_entry(6, date_created=gf_time(NOW - timedelta(minutes=45)), **{"3": "(617) 555-0160"})
    serve_pages([make_entry(8, date_created=gf_time(NOW)), late_committed, behind_overlap], form_object)

    result = poll_form(session, site, "1", client, settings, now=NOW)

    stored = sorted(session.scalars(select(Submission.entry_id)))
    assert stored == ["7", "8"] and result.seen == 2


@responses.activate
def test_an_entry_that_came_by_webhook_and_by_poll_is_one_submission_and_one_lead(
    session: Session, settings: Settings, site: SiteConfig, client: GravityFormsClient, form_object: dict[str, Any]
) -> None:
    entry = make_entry(42, date_created=gf_time(NOW - timedelta(minutes=2)))
    stored = store_entry(session, site="main", entry=entry, source=SubmissionSource.WEBHOOK)
    session.commit()
    serve_pages([entry], form_object)

    result = poll_form(session, site, "1", client, settings, now=NOW)
    process_submission(session, stored.submission_id, settings)
    session.commit()

    assert result.seen == 1 and result.new_submission_ids == []
    assert count(session, Submission) == 1 and count(session, Lead) == 1


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (500, {"code": "internal_server_error"}, "failed with 500"),
        (401, {"code": "rest_forbidden", "message": "Sorry"}, "consumer key"),
        (200, "<html>Briefly unavailable for scheduled maintenance</html>", "not JSON"),
        (200, {"unexpected": True}, "unexpected shape"),
    ],
    ids=["server-error", "unauthorized", "html-page", "wrong-shape"],
)
@responses.activate
def test_a_failing_site_is_recorded_and_backed_off_not_crashed(
    session: Session, settings: Settings, site: SiteConfig, client: GravityFormsClient, form_object: dict[str, Any],
    status: int, body: Any, says: str,
) -> None:
    responses.get(FORM_URL, json=form_object)
    if isinstance(body, str):
        responses.get(ENTRIES_URL, body=body, status=status, content_type="text/html")
    else:
        responses.get(ENTRIES_URL, json=body, status=status)

    first = poll_form(session, site, "1", client, settings, now=NOW)
    second = poll_form(session, site, "1", client, settings, now=NOW + timedelta(minutes=2))

    assert first.error is not None and says in first.error
    assert second.error is not None
    cursor = session.scalars(select(PollCursor)).one()
    assert cursor.consecutive_failures == 2
    assert cursor.next_poll_at == NOW + timedelta(minutes=2) + timedelta(seconds=60 * 4)
    assert cursor.last_error is not None and cursor.last_success_at is None


@responses.activate
def test_a_form_is_fetched_on_the_first_poll_and_refreshed_after_an_hour(
    session: Session, settings: Settings, site: SiteConfig, client: GravityFormsClient, form_object: dict[str, Any]
) -> None:
    serve_pages([], form_object)
    poll_form(session, site, "1", client, settings, now=NOW)
    poll_form(session, site, "1", client, settings, now=NOW + timedelta(minutes=30))
    poll_form(session, site, "1", client, settings, now=NOW + timedelta(minutes=90))

    form_calls = [call for call in responses.calls if (call.request.url or "").endswith("/forms/1")]
    assert len(form_calls) == 2


def test_two_pollers_never_claim_the_same_form_at_once(
    session: Session, settings: Settings, site: SiteConfig
) -> None:
    first = claim_due_forms(session, [site], NOW)
    second = claim_due_forms(session, [site], NOW)

    assert [(s.name, form) for s, form in first] == [("main", "1")]
    assert second == []


@responses.activate
def test_a_claimed_form_is_renewed_while_it_is_polled_and_given_up_before_its_next_poll_time_is_written(
    session: Session, settings: Settings, site: SiteConfig, client: GravityFormsClient, form_object: dict[str, Any]
) -> None:
    serve_pages([], form_object)
    [(claimed_site, form_id)] = claim_due_forms(session, [site], NOW)
    cursor_id = session.scalars(select(PollCursor.id)).one()
    assert keeper.held(POLL) == {cursor_id}

    poll_form(session, claimed_site, form_id, client, settings, now=NOW)

    assert keeper.held(POLL) == set()
    interval = timedelta(seconds=settings.poll_interval_seconds)
    assert session.get_one(PollCursor, cursor_id).next_poll_at == NOW + interval

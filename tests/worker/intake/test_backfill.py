from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from integrations.gravityforms.client import PAGE_SIZE
from tests.conftest import make_entry
from worker.cli import main
from worker.staff.services import default_services
from worker.store.models import BackfillRun, OutboxKind, OutboxMessage, Submission, SubmissionState

SITE_URL = "https://clinic.example.org"
ENTRIES_URL = f"{SITE_URL}/wp-json/gf/v2/forms/1/entries"


@pytest.fixture
def api_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GRAVITYFORMS_BASE_URL", SITE_URL)
    monkeypatch.setenv("GRAVITYFORMS_CONSUMER_KEY", "ck_test")
    monkeypatch.setenv("GRAVITYFORMS_CONSUMER_SECRET", "cs_test")
    monkeypatch.setenv("GRAVITYFORMS_FORM_IDS", "1")
    get_settings.cache_clear()
    default_services.cache_clear()
    return get_settings()


FIRST_NAMES = ["Avery", "Blair", "Casey", "Devon", "Emery", "Finley", "Harper", "Jules", "Kendall", "Logan"]


def history(count: int, first: datetime) -> list[dict[str, Any]]:
    """Oldest first, an hour apart, each a different fictional person."""
    return [
        make_entry(n + 1, date_created=(first + timedelta(hours=n)).strftime("%Y-%m-%d %H:%M:%S"),
                   **{"3": f"(212) 555-{100 + n % 100:04d}", "2": f"h{n}@example.org",
                      "1.3": FIRST_NAMES[n % len(FIRST_NAMES)], "ip": f"198.51.100.{n % 250}"})
        for n in range(count)
    ]


def serve(entries: list[dict[str, Any]], form_object: dict[str, Any], fail_page: int | None = None) -> None:
    responses.get(f"{SITE_URL}/wp-json/gf/v2/forms/1", json=form_object)

    def page(request: Any) -> tuple[int, dict[str, str], str]:
        query = parse_qs(urlsplit(request.url).query)
        number = int(query["paging[current_page]"][0])
        assert query["sorting[direction]"] == ["ASC"]
        if number == fail_page:
            return 503, {}, json.dumps({"code": "unavailable"})
        chunk = entries[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
        return 200, {}, json.dumps({"total_count": len(entries), "entries": chunk})

    responses.add_callback(responses.GET, ENTRIES_URL, callback=page)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@responses.activate
def test_backfill_imports_history_resumes_after_an_outage_and_never_imports_twice(
    api_settings: Settings, session: Session, form_object: dict[str, Any]
) -> None:
    entries = history(120, datetime(2026, 6, 1, tzinfo=UTC))
    serve(entries, form_object, fail_page=2)

    code, output = run("backfill", "--form", "1", "--since", "2026-06-01")
    assert code != 0 and "run the same command again to resume" in output
    assert session.scalar(select(func.count()).select_from(Submission)) == PAGE_SIZE
    # The page stored before the outage is processed before the command stops, not left for a sweeper.
    assert set(session.scalars(select(Submission.state))) == {SubmissionState.PROCESSED}

    responses.reset()
    serve(entries, form_object)
    code, output = run("backfill", "--form", "1", "--since", "2026-06-01")

    assert code == 0, output
    assert "imported 70, already seen 0" in output
    assert session.scalar(select(func.count()).select_from(Submission)) == 120
    page_numbers = [parse_qs(urlsplit(c.request.url).query)["paging[current_page]"][0]
                    for c in responses.calls if "/entries" in (c.request.url or "")]
    assert page_numbers == ["2", "3"]
    assert session.scalars(select(BackfillRun)).one().finished_at is not None
    code, output = run("backfill", "--form", "1", "--since", "2026-06-01")
    assert "finished" in output


@responses.activate
def test_backfilled_old_entries_reach_the_crm_without_texting_staff(
    api_settings: Settings, session: Session, form_object: dict[str, Any]
) -> None:
    old = history(3, datetime(2026, 6, 1, tzinfo=UTC))
    recent = make_entry(99, date_created=(datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"),
                        **{"3": "(415) 555-0199", "2": "recent@example.org", "1.3": "Recent"})
    serve([*old, recent], form_object)

    code, output = run("backfill", "--form", "1", "--since", "2026-06-01")

    assert code == 0, output
    kinds = list(session.scalars(select(OutboxMessage.kind)))
    assert kinds.count(OutboxKind.CRM_SYNC) == 4
    assert kinds.count(OutboxKind.STAFF_ALERT) == 1


@responses.activate
def test_backfill_skips_entries_created_before_since(
    api_settings: Settings, session: Session, form_object: dict[str, Any]
) -> None:
    serve(history(4, datetime(2026, 5, 31, 22, tzinfo=UTC)), form_object)

    code, output = run("backfill", "--form", "1", "--since", "2026-06-01")

    assert code == 0, output
    assert "imported 2" in output and "skipped (before --since or invalid) 2" in output

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from click.testing import CliRunner
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.fakes.speed import alerted_lead, claimed_lead
from worker.cli import main
from worker.intake.entries import register_form
from worker.ops.reports import format_duration, format_source_report, percentile, source_report, speed_report
from worker.store.db import utcnow
from worker.store.models import Lead, LeadStatus

NOW = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)  # 12:00 in New York
YESTERDAY_NOON = datetime(2026, 11, 19, 17, 0, tzinfo=UTC)
ZONE = "America/New_York"


def test_each_day_shows_the_median_and_90th_percentile_time_to_claim_and_to_call(session: Session) -> None:
    for n, (claim_seconds, call_seconds) in enumerate([(60, 300), (120, 900), (180, None), (240, None), (600, None)]):
        claimed_lead(session, f"R-YD{n:03d}", YESTERDAY_NOON + timedelta(minutes=n), "Avery Example",
                     claim_after=timedelta(seconds=claim_seconds),
                     call_after=timedelta(seconds=call_seconds) if call_seconds else None)
    session.commit()

    figures = speed_report(session, days=14, now=NOW, timezone=ZONE)

    assert (figures.days[0].day, figures.days[-1].day, len(figures.days)) == (date(2026, 11, 7), date(2026, 11, 20), 14)
    yesterday = next(d.speed for d in figures.days if d.day == date(2026, 11, 19))
    assert (yesterday.claims, yesterday.claim_p50, yesterday.claim_p90) == (5, 180.0, 600.0)
    assert (yesterday.calls, yesterday.call_p50, yesterday.call_p90) == (2, 300.0, 900.0)
    assert all(d.speed.claims == 0 and d.speed.claim_p50 is None for d in figures.days if d.day != date(2026, 11, 19))


def test_days_are_counted_in_the_centers_time_zone(session: Session) -> None:
    late_evening_in_new_york = datetime(2026, 11, 20, 3, 30, tzinfo=UTC)
    claimed_lead(session, "R-EVE01", late_evening_in_new_york, "Avery Example", claim_after=timedelta(minutes=2))
    session.commit()

    figures = speed_report(session, days=14, now=NOW, timezone=ZONE)

    assert [d.day for d in figures.days if d.speed.claims] == [date(2026, 11, 19)]


def test_each_staff_member_gets_a_row_fastest_median_first(session: Session) -> None:
    for n, seconds in enumerate([300, 500, 700]):
        claimed_lead(session, f"R-BL{n:03d}", YESTERDAY_NOON + timedelta(minutes=n), "Blake Example",
                     claim_after=timedelta(seconds=seconds))
    claimed_lead(session, "R-AV001", YESTERDAY_NOON, "Avery Example", claim_after=timedelta(seconds=45),
                 call_after=timedelta(seconds=90))
    session.commit()

    figures = speed_report(session, days=14, now=NOW, timezone=ZONE)

    assert [(s.staff_name, s.speed.claims, s.speed.claim_p50, s.speed.calls) for s in figures.staff] == [
        ("Avery Example", 1, 45.0, 1), ("Blake Example", 3, 500.0, 0)]


def test_claims_older_than_the_window_are_left_out(session: Session) -> None:
    claimed_lead(session, "R-OLD01", NOW - timedelta(days=20), "Avery Example", claim_after=timedelta(minutes=1))
    session.commit()

    figures = speed_report(session, days=14, now=NOW, timezone=ZONE)

    assert sum(d.speed.claims for d in figures.days) == 0
    assert figures.staff == []


def test_it_lists_alerted_unclaimed_leads_oldest_first_with_their_age(session: Session) -> None:
    alerted_lead(session, "R-WAIT2", NOW - timedelta(minutes=4))
    alerted_lead(session, "R-WAIT1", NOW - timedelta(minutes=31))
    claimed_lead(session, "R-DONE1", NOW - timedelta(minutes=50), "Avery Example", claim_after=timedelta(minutes=1))
    # Backfilled history too old to alert about: nobody is waiting on it.
    session.add(Lead(ref="R-HIST1", status=LeadStatus.NEW, created_at=NOW - timedelta(hours=2),
                     last_request_at=NOW - timedelta(hours=2)))
    session.commit()

    figures = speed_report(session, days=14, now=NOW, timezone=ZONE)

    assert [(u.ref, u.age) for u in figures.unclaimed] == [
        ("R-WAIT1", timedelta(minutes=31)), ("R-WAIT2", timedelta(minutes=4))]


def test_leads_today_counts_people_since_local_midnight_and_not_merged_duplicates(session: Session) -> None:
    alerted_lead(session, "R-TDY01", NOW - timedelta(hours=1))
    alerted_lead(session, "R-TDY02", datetime(2026, 11, 20, 5, 30, tzinfo=UTC))  # 00:30 in New York
    alerted_lead(session, "R-YST01", datetime(2026, 11, 20, 4, 30, tzinfo=UTC))  # 23:30 yesterday in New York
    session.add(Lead(ref="R-MRG01", status=LeadStatus.MERGED, created_at=NOW - timedelta(hours=1),
                     last_request_at=NOW - timedelta(hours=1)))
    session.commit()

    assert speed_report(session, days=14, now=NOW, timezone=ZONE).leads_today == 2


def test_it_counts_alerts_sent_and_those_twilio_could_not_deliver(session: Session) -> None:
    alerted_lead(session, "R-SMS01", NOW - timedelta(hours=3))
    alerted_lead(session, "R-SMS02", NOW - timedelta(hours=2), alert_status="undelivered")
    alerted_lead(session, "R-SMS03", NOW - timedelta(hours=1), alert_status="failed")
    session.commit()

    figures = speed_report(session, days=14, now=NOW, timezone=ZONE)

    assert (figures.alerts_sent, figures.alerts_undelivered) == (3, 2)


def test_percentiles_use_the_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.9) == 7.0
    assert percentile([float(n) for n in range(1, 11)], 0.5) == 5.0
    assert percentile([float(n) for n in range(1, 11)], 0.9) == 9.0


def test_durations_read_as_seconds_minutes_or_hours() -> None:
    assert [format_duration(v) for v in (None, 42.4, 185.0, 8040.0)] == ["-", "42s", "3m05s", "2h14m"]


def test_report_speed_prints_the_day_and_staff_tables_with_lead_references_only(session: Session) -> None:
    now = utcnow()
    claimed_lead(session, "R-CLI01", now - timedelta(minutes=30), "Avery Example", claim_after=timedelta(minutes=2),
                 call_after=timedelta(minutes=3))
    alerted_lead(session, "R-CLI02", now - timedelta(minutes=7))
    session.commit()

    result = CliRunner().invoke(main, ["report", "speed", "--days", "14"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].endswith("unclaimed now 1, alerts sent 2, undelivered 0")
    assert sum(1 for line in lines if line.startswith(("Mon ", "Tue ", "Wed ", "Thu ", "Fri ", "Sat ", "Sun "))) == 14
    assert any(line.startswith("Avery Example") and " 2m00s " in line and "3m00s" in line for line in lines)
    assert any(line.startswith("R-CLI02") for line in lines)
    assert "Sample" not in result.stdout


def came_from(session: Session, lead: Lead, source_url: str, **fields: str) -> None:
    lead.submissions[0].payload = {"id": "1", "form_id": "1", "source_url": source_url, **fields}
    session.flush()


def test_sources_give_leads_and_time_to_claim_per_utm_source_click_id_referrer_or_direct(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    form_object["fields"].append({"id": 9, "type": "hidden", "label": "Referrer", "inputName": "referrer"})
    register_form(session, site="main", form_object=form_object)
    ads = "https://clinic.example.org/contact/?utm_source=Google&utm_medium=cpc"
    for n, seconds in enumerate([60, 120, 600]):
        came_from(session, claimed_lead(session, f"R-AD{n:03d}", YESTERDAY_NOON, "Avery Example",
                                        claim_after=timedelta(seconds=seconds)), ads)
    came_from(session, alerted_lead(session, "R-FB001", YESTERDAY_NOON),
              "https://clinic.example.org/contact/?fbclid=IwAR-test")
    came_from(session, alerted_lead(session, "R-RF001", YESTERDAY_NOON), "https://clinic.example.org/contact/",
              **{"9": "https://www.example.org/best-rehabs"})
    came_from(session, alerted_lead(session, "R-DI001", YESTERDAY_NOON), "https://clinic.example.org/contact/")
    came_from(session, alerted_lead(session, "R-OLD02", NOW - timedelta(days=40)), ads)
    session.commit()

    rows = source_report(session, settings, days=30, now=NOW)

    assert [(r.source, r.leads, r.claimed, r.claim_p50, r.claim_p90) for r in rows] == [
        ("google / cpc", 3, 3, 120.0, 600.0),
        ("(direct)", 1, 0, None, None),
        ("example.org / referral", 1, 0, None, None),
        ("facebook (fbclid)", 1, 0, None, None),
    ]
    text = format_source_report(rows, 30)
    assert "google / cpc" in text.splitlines()[3] and "2m00s" in text.splitlines()[3]
    assert "R-AD" not in text


def test_report_sources_prints_the_table(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["report", "sources", "--days", "7"])

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "leads and time to claim by source, last 7 days, from the person's submission")

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from integrations.crm import LogOnlyCRM
from tests.conftest import REPO, make_entry
from tests.fakes.twilio import RecordingMessenger
from tests.worker.leads.test_processing import ingest, lead_count
from worker.delivery.outbox import deliver
from worker.intake.entries import register_form
from worker.leads.processing import SOURCE_FLOOD
from worker.staff.roster import load_roster
from worker.staff.services import Services
from worker.store.db import utcnow
from worker.store.models import Lead, OutboxKind, OutboxMessage, StaffAlert, Submission, SubmissionState

PEOPLE = ("Avery", "Blair", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan")


@pytest.fixture
def limit_three(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ALERT_SOURCE_MAX_PER_HOUR", "3")
    get_settings.cache_clear()
    return get_settings()


def flood(session: Session, settings: Settings, first_names: tuple[str, ...], *, start: int = 1,
          ip: str | None = "198.51.100.66") -> None:
    for n, first in enumerate(first_names, start=start):
        entry = make_entry(n, ip=ip, **{"1.3": first, "1.6": "Sample", "3": f"(617) 555-01{50 + n}",
                                        "2": f"person{n}@example.org"})
        ingest(session, settings, entry)


def rows_of(session: Session, kind: OutboxKind) -> list[OutboxMessage]:
    return list(session.scalars(select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)))


def test_a_flood_of_people_from_one_device_is_texted_per_lead_up_to_the_limit_then_once_in_summary(
    session: Session, limit_three: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=limit_three.site, form_object=form_object)

    flood(session, limit_three, PEOPLE)

    assert lead_count(session) == 8
    assert len(rows_of(session, OutboxKind.CRM_SYNC)) == 8, "every lead still goes to the CRM"
    alerts = rows_of(session, OutboxKind.STAFF_ALERT)
    assert len(alerts) == 4  # three leads one by one, then one summary
    submissions = list(session.scalars(select(Submission).order_by(Submission.id)))
    assert all(sub.state == SubmissionState.PROCESSED for sub in submissions)
    assert [sub.flag_reason is None for sub in submissions] == [True] * 3 + [False] * 5
    assert all(sub.flag_reason.startswith(f"{SOURCE_FLOOD}: over ALERT_SOURCE_MAX_PER_HOUR=3")
               for sub in submissions[3:] if sub.flag_reason)


def test_the_summary_text_counts_the_flood_and_names_lead_references_only(
    session: Session, limit_three: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=limit_three.site, form_object=form_object)
    flood(session, limit_three, PEOPLE)
    messenger = RecordingMessenger()
    services = Services(limit_three, LogOnlyCRM(), messenger, load_roster(REPO / "config/roster.example.toml"))

    for row in rows_of(session, OutboxKind.STAFF_ALERT):
        deliver(session, row.id, services)

    flooded = session.scalars(
        select(Lead.ref).join(Submission, Submission.lead_id == Lead.id)
        .where(Submission.flag_reason.is_not(None)).order_by(Submission.id)
    ).all()
    *per_lead, (_, summary) = messenger.texts
    assert len(per_lead) == 3
    assert summary.startswith("admitflow: 5 more callback request(s) from one device within an hour")
    assert summary.endswith(f"Each has a CRM callback task: {', '.join(flooded)}.")
    for phi in ("Finley", "Harper", "Sample", "555-01", "5550158", "example.org"):
        assert phi not in summary
    assert session.scalar(select(func.count()).select_from(StaffAlert)) == 4


def test_leads_from_different_devices_are_each_texted(
    session: Session, limit_three: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=limit_three.site, form_object=form_object)

    for n, first in enumerate(PEOPLE, start=1):
        entry = make_entry(n, ip=f"198.51.100.{n}", **{"1.3": first, "3": f"(617) 555-01{50 + n}",
                                                       "2": f"person{n}@example.org"})
        ingest(session, limit_three, entry)

    assert len(rows_of(session, OutboxKind.STAFF_ALERT)) == 8


def test_a_device_is_texted_about_one_by_one_again_once_its_alerts_are_an_hour_old(
    session: Session, limit_three: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=limit_three.site, form_object=form_object)
    flood(session, limit_three, PEOPLE[:5])
    session.execute(update(OutboxMessage).values(created_at=utcnow() - timedelta(minutes=61)))
    session.commit()

    flood(session, limit_three, PEOPLE[5:], start=6)

    alerts = rows_of(session, OutboxKind.STAFF_ALERT)
    assert len(alerts) == 4 + 3
    assert session.scalar(
        select(func.count()).select_from(Submission).where(Submission.id > 5, Submission.flag_reason.is_not(None))
    ) == 0


def test_a_limit_of_zero_texts_about_every_lead(
    session: Session, settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERT_SOURCE_MAX_PER_HOUR", "0")
    get_settings.cache_clear()
    register_form(session, site=settings.site, form_object=form_object)

    flood(session, get_settings(), PEOPLE)

    assert len(rows_of(session, OutboxKind.STAFF_ALERT)) == 8


def test_entries_without_device_evidence_are_never_coalesced(
    session: Session, limit_three: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=limit_three.site, form_object=form_object)

    flood(session, limit_three, PEOPLE, ip=None)

    assert len(rows_of(session, OutboxKind.STAFF_ALERT)) == 8

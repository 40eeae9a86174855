from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from tests.conftest import TEST_KEYS, make_entry
from tests.worker.leads.test_processing import ingest, lead_count
from worker.cli import main
from worker.intake.entries import register_form
from worker.staff.services import default_services
from worker.store.models import Lead
from worker.store.phi import KeyConfigurationError, current_vault, generate_keys, reset_vault
from worker.trust.key_rotation import rotate_blind_indexes

OLD_KEY = TEST_KEYS["ADMITFLOW_BLIND_INDEX_KEY"]
NEW_KEY = generate_keys()["ADMITFLOW_BLIND_INDEX_KEY"]
FIRST_NAMES = ("Avery", "Blair", "Casey", "Devon", "Emery")


def use_index_keys(monkeypatch: pytest.MonkeyPatch, *keys: str) -> None:
    monkeypatch.setenv("ADMITFLOW_BLIND_INDEX_KEY", ",".join(keys))
    get_settings.cache_clear()
    default_services.cache_clear()
    reset_vault()


def person(
    entry_id: int, *, phone: str | None, email: str, ip: str = "198.51.100.7", first: str = "Avery"
) -> dict[str, Any]:
    return make_entry(entry_id, ip=ip, **{"1.3": first, "1.6": "Sample", "3": phone, "2": email})


def stored_digests(session: Session) -> set[str]:
    queries = (
        "SELECT phone_index FROM leads", "SELECT email_index FROM leads", "SELECT device_index FROM submissions",
        "SELECT digest FROM lead_keys",
    )
    return {value for query in queries for value in session.execute(text(query)).scalars() if value}


def test_a_key_list_writes_digests_under_the_first_key_and_looks_them_up_under_every_key(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_index_keys(monkeypatch, OLD_KEY)
    old_digest = current_vault().blind_index("phone", "+16175550141")
    use_index_keys(monkeypatch, NEW_KEY, OLD_KEY)
    vault = current_vault()

    assert vault.blind_indexes("phone", "+16175550141") == (vault.blind_index("phone", "+16175550141"), old_digest)
    assert vault.blind_index("phone", "+16175550141") != old_digest


def test_a_key_listed_twice_is_refused_with_what_to_fix(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    use_index_keys(monkeypatch, OLD_KEY, OLD_KEY)
    with pytest.raises(KeyConfigurationError, match="same key twice"):
        current_vault()


def test_a_lead_indexed_under_the_old_key_is_found_during_the_rotation_and_after_it(
    session: Session, settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    ingest(session, settings, person(1, phone="(617) 555-0141", email="avery.sample@example.org"))
    old_digests = stored_digests(session)
    session.close()

    use_index_keys(monkeypatch, NEW_KEY, OLD_KEY)
    during = ingest(session, settings, person(2, phone="617-555-0141", email="a.sample@example.org",
                                                ip="198.51.100.8"))
    rotated = CliRunner().invoke(main, ["keys", "rotate", "--batch", "1"])
    use_index_keys(monkeypatch, NEW_KEY)
    after_phone = ingest(session, settings, person(3, phone="+1 617 555 0141", email="other@example.org",
                                                     ip="198.51.100.9"))
    after_email = ingest(session, settings, person(4, phone="(617) 555-0199", email="Avery.Sample@example.org",
                                                     ip="198.51.100.10"))

    assert rotated.exit_code == 0, rotated.output
    assert "recomputed 3 with the newest key" in rotated.stdout  # the lead's phone and email, one device
    assert not during.new_lead and not after_phone.new_lead and not after_email.new_lead
    assert lead_count(session) == 1
    assert session.scalars(select(Lead)).one().repeat_count == 3
    assert old_digests and not old_digests & stored_digests(session), "a digest under the old key is still stored"


def test_an_interrupted_rotation_resumes_and_a_finished_one_has_nothing_left(
    session: Session, settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    for n, first in enumerate(FIRST_NAMES, start=1):
        ingest(session, settings, person(n, phone=f"(617) 555-01{40 + n}", email=f"p{n}@example.org",
                                         ip=f"198.51.100.{n}", first=first))
    use_index_keys(monkeypatch, NEW_KEY, OLD_KEY)

    def crash_after_two_batches(table: str, rows: int) -> None:
        crash_after_two_batches.calls += 1  # type: ignore[attr-defined]
        if crash_after_two_batches.calls == 2:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    crash_after_two_batches.calls = 0  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        rotate_blind_indexes(session, current_vault(), batch=2, progress=crash_after_two_batches)
    session.rollback()
    resumed = rotate_blind_indexes(session, current_vault(), batch=2)
    again = rotate_blind_indexes(session, current_vault(), batch=2)

    # 5 leads x (phone, email) + 5 devices: the first two batches did 4 leads' digests, the rest was left.
    assert resumed.rewritten == 15 - 8
    assert resumed.stale_locks == 15  # every lock row was made under the old key
    assert (again.rewritten, again.stale_locks) == (0, 0)
    use_index_keys(monkeypatch, NEW_KEY)
    for n, first in enumerate(FIRST_NAMES, start=1):
        outcome = ingest(session, settings, person(10 + n, phone=f"617.555.01{40 + n}", email=f"p{n}@example.org",
                                                   ip="203.0.113.1", first=first))
        assert not outcome.new_lead
    assert lead_count(session) == 5


def test_leads_a_join_reconciles_are_merged_while_only_some_digests_are_rewritten(
    session: Session, settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    # Two typos of one name, one typo apart from "Ulises" each but two from each other: kept apart at first.
    ingest(session, settings, person(1, phone="(617) 555-0161", email="u1@example.org", first="Uliess"))
    ingest(session, settings, person(2, phone="(617) 555-0161", email="u2@example.org", first="Ulsies",
                                     ip="198.51.100.20"))
    use_index_keys(monkeypatch, NEW_KEY, OLD_KEY)

    def stop_after_the_first_lead(table: str, rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rotate_blind_indexes(session, current_vault(), batch=1, progress=stop_after_the_first_lead)
    session.rollback()
    ingest(session, settings, person(3, phone=None, email="u1@example.org", first="Ulises", ip="198.51.100.30"))

    assert session.scalars(select(Lead.first_name).where(Lead.status != "merged")).all() == ["Uliess"]

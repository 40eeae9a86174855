"""Every answer of a real-shaped entry reaches the CRM: the contact as the person typed it, and a note with every
other answered field as "Label: value" (HubSpot's request bodies asserted through `responses`)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from sqlalchemy import select

from config.settings import Settings
from integrations.crm import NoteRoom
from integrations.hubspot.client import HubSpotCRM
from tests.conftest import make_entry
from tests.support.gf_corpus import answered_field_ids, corpus_entries, corpus_forms, expected
from tests.worker.delivery.test_outbox import services
from worker.delivery.crm_note import note_text, request_details
from worker.delivery.dispatch import InlineDispatcher
from worker.intake.entries import register_form, store_entries
from worker.store.db import session_scope
from worker.store.models import Lead, Submission, SubmissionSource

HUBSPOT = "https://hubspot.test"


class HubSpotRecorder:
    """A HubSpot that finds nothing and creates everything, keeping every request body it was sent."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.created = 0
        for method in ("POST", "PATCH"):
            mock.add_callback(method, re.compile(rf"{HUBSPOT}/crm/v3/objects/.*"), callback=self._answer)

    def _answer(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body or "{}")
        self.bodies.append(body)
        if request.url.endswith("/search"):
            return 200, {}, json.dumps({"total": 0, "results": []})
        self.created += 1
        return 201, {}, json.dumps({"id": str(900 + self.created), "properties": {}})

    def text(self) -> str:
        """Every string sent, as staff would read it in HubSpot (HTML unescaped, line breaks back)."""
        strings: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)
            elif isinstance(value, str):
                strings.append(html.unescape(value.replace("<br>", "\n")))

        walk(self.bodies)
        return "\n".join(strings)


@pytest.fixture
def hubspot() -> Iterator[HubSpotRecorder]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield HubSpotRecorder(mock)


def deliver_entries(settings: Settings, entries: list[dict[str, Any]], forms: list[dict[str, Any]]) -> None:
    with session_scope() as session:
        for form in forms:
            register_form(session, site=settings.site, form_object=form)
        ids = [stored.submission_id for stored in
               store_entries(session, site=settings.site, entries=entries, source=SubmissionSource.WEBHOOK)]
    crm = HubSpotCRM("test-token", base_url=HUBSPOT)
    InlineDispatcher(services(settings, crm=crm)).submissions_stored(ids)


@pytest.mark.parametrize("entry", corpus_entries(), ids=lambda entry: f"entry-{entry['id']}")
def test_every_answered_field_of_a_corpus_entry_reaches_the_crm(
    settings: Settings, hubspot: HubSpotRecorder, entry: dict[str, Any]
) -> None:
    form = corpus_forms()[entry["form_id"]]
    want = expected()[entry["id"]]

    deliver_entries(settings, [entry], [form])

    assert answered_field_ids(form, entry) == set(want["reaches_crm"]), "the expectations name every answered field"
    sent = hubspot.text()
    for field_id, readable in want["reaches_crm"].items():
        for text in readable or []:
            assert text in sent, f"field {field_id} of entry {entry['id']}: {text!r} is not in what HubSpot got"
    assert entry["source_url"] in sent


@pytest.mark.parametrize("entry", corpus_entries(), ids=lambda entry: f"entry-{entry['id']}")
def test_each_corpus_entry_becomes_the_right_lead_with_the_contact_as_typed(
    settings: Settings, hubspot: HubSpotRecorder, entry: dict[str, Any]
) -> None:
    want = expected()[entry["id"]]["lead"]

    deliver_entries(settings, [entry], [corpus_forms()[entry["form_id"]]])

    with session_scope() as session:
        lead = session.scalars(select(Lead)).one()
        submission = session.scalars(select(Submission)).one()
        flag = submission.flag_reason.split(":", 1)[0] if submission.flag_reason else None
        assert (lead.first_name, lead.last_name, lead.phone, flag) == (
            want["first_name"], want["last_name"], want["phone"], want["flag"])
    contact = next(body["properties"] for body in hubspot.bodies if "firstname" in body.get("properties", {}))
    assert contact.get("email") == want["email"]
    assert contact.get("phone") == want["phone"]


def test_a_message_longer_than_the_crm_keeps_says_where_it_continues(settings: Settings) -> None:
    message = "I need help. " * 2_000  # 26,000 characters
    entry = make_entry(1, **{"4": message})
    with session_scope() as session:
        from tests.conftest import EXAMPLES

        register_form(session, site=settings.site, form_object=json.loads((EXAMPLES / "form.json").read_text()))
        stored = store_entries(session, site=settings.site, entries=[entry], source=SubmissionSource.WEBHOOK)[0]
        submission = session.get_one(Submission, stored.submission_id)
        details = request_details(session, submission, settings)
        assert details is not None
        lead = Lead(ref="R-LONG1")
        room = NoteRoom(10_000)

        note = note_text(lead, submission, details, room)

    assert note is not None and len(note) <= room.limit
    assert note.startswith("Website request R-LONG1 (form 1, entry 1):")
    assert f"of the request's {len(note_text(lead, submission, details, NoteRoom(10**6)) or ''):,} characters" in note
    assert f"admitflow submissions show {stored.submission_id} --reveal]" in note
    assert message.strip() not in note and "I need help. I need help." in note


def test_a_twenty_thousand_character_message_reaches_hubspot_whole(
    settings: Settings, hubspot: HubSpotRecorder
) -> None:
    from tests.conftest import EXAMPLES

    message = "".join(f"Line {n}: please call after 5pm.\n" for n in range(700))  # about 20,000 characters
    deliver_entries(settings, [make_entry(1, **{"4": message})],
                    [json.loads((EXAMPLES / "form.json").read_text())])

    assert message.strip() in hubspot.text()
    assert "This note continues" not in hubspot.text()

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

import pytest

from config.settings import Settings
from tests.conftest import WEBHOOK_SECRET, make_entry
from worker.intake.entries import register_form
from worker.store.db import session_scope
from worker.store.models import Submission
from worker.web import app as web

Event = tuple[str, object]


class Recording:
    """A dispatcher that notes, when handed a submission, whether it was committed."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events

    def submission_stored(self, submission_id: int) -> None:
        with session_scope() as session:
            self.events.append(("handed on", session.get(Submission, submission_id) is not None))

    def submissions_stored(self, submission_ids: list[int]) -> None:
        for submission_id in submission_ids:
            self.submission_stored(submission_id)

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None:
        self.events.append(("outbox", list(outbox_ids)))

    def crm_ready(self, outbox_ids: Iterable[int], *, linger: float = 0.0) -> None:
        self.events.append(("crm", list(outbox_ids)))


def post(app: Any, body: bytes, events: list[Event]) -> None:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/hooks/gravityforms", "raw_path": b"/hooks/gravityforms", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"x-admitflow-secret", WEBHOOK_SECRET.encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            events.append(("answered", "body sent"))
        elif message["type"] == "http.response.start":
            events.append(("status", message["status"]))

    asyncio.run(app(scope, receive, send))


@pytest.fixture
def handed_on(settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[Event]:
    """What the web app hands on, and when, to a recording dispatcher; the example form is registered."""
    with session_scope() as session:
        register_form(session, site=settings.site, form_object=form_object)
    events: list[Event] = []
    monkeypatch.setattr(web, "dispatcher_for", lambda *_: Recording(events))
    return events


def test_the_202_is_sent_for_a_committed_entry_before_it_is_handed_to_the_broker(
    settings: Settings, handed_on: list[Event]
) -> None:
    post(web.create_app(settings), json.dumps(make_entry(1)).encode(), handed_on)

    assert handed_on == [("status", 202), ("answered", "body sent"), ("handed on", True)]


def test_an_entry_seen_before_is_answered_without_being_handed_on_again(
    settings: Settings, handed_on: list[Event]
) -> None:
    app = web.create_app(settings)
    body = json.dumps(make_entry(1)).encode()

    post(app, body, handed_on)
    handed_on.clear()
    post(app, body, handed_on)

    assert handed_on == [("status", 202), ("answered", "body sent")]

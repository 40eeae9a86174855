"""Admissions alert scenarios on what we run ourselves: the web server, a Celery worker and beat on Redis, and
PostgreSQL. Twilio and HubSpot are the loopback fake; Twilio's webhooks are played by the test, signed with the
`twilio` package's own validator. Time is moved by making a timer due, never by sleeping through a reminder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from base64 import b64decode
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import select, text
from twilio.request_validator import RequestValidator

from config.settings import Settings
from integrations.twilio.rate import SendRate
from tests.conftest import EXAMPLES, TEST_KEYS, WEBHOOK_SECRET, configure_environment, make_entry
from tests.fakes.admissions import new_lead
from tests.fakes.providers import FakeProviders
from tests.fakes.rosters import ALWAYS_ON
from tests.support.line_stack import escalation_timer, make_due
from tests.support.processes import free_port, healthy, wait_for
from worker.intake.entries import register_form
from worker.staff.alerts import start_escalation
from worker.staff.escalation import lease_due_timers
from worker.staff.templates import spoken_ref
from worker.store.db import new_session, session_scope, utcnow
from worker.store.models import Claim, EscalationTimer, Lead, OutboxKind, OutboxMessage

pytestmark = pytest.mark.services

TWILIO_SID = "AC" + "0" * 30 + "55"
TWILIO_TOKEN = "scenario-auth-token"
CENTER_NUMBER = "+18555550100"
AVERY, BLAKE, DANA = "+16175550101", "+16175550102", "+16175550104"
CANARY = {"1.3": "Quorvantha", "1.6": "Zilberstrand", "2": "quorvantha.canary@example.org", "3": "(617) 555-0177",
          "4": "canary-xyzzy: I have been struggling with drinking"}
CANARY_STRINGS = ("Quorvantha", "Zilberstrand", "quorvantha", "5550177", "555-0177", "canary-xyzzy", "drinking")


@dataclass
class Desk:
    web_url: str
    providers: FakeProviders
    settings: Settings
    logs: list[Path]
    monitor_log: Path
    redis_db: int

    def post_entry(self, entry: dict[str, Any]) -> None:
        response = requests.post(f"{self.web_url}/hooks/gravityforms", data=json.dumps(entry), timeout=10,
                                 headers={"X-Admitflow-Secret": WEBHOOK_SECRET, "Content-Type": "application/json"})
        assert response.status_code == 202, response.text

    def as_twilio(self, path_and_query: str, params: dict[str, str]) -> requests.Response:
        """Play one of Twilio's webhooks: form-encoded, signed for the public URL."""
        url = self.web_url + path_and_query
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
        return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)

    def texts_to(self, phone: str) -> list[dict[str, str]]:
        return [sms for sms in self.providers.state.sms if sms["To"] == phone]

    def calls_to(self, phone: str) -> list[dict[str, str]]:
        return [call for call in self.providers.state.voice_calls if call["To"] == phone]

    def lead(self, ref: str | None = None) -> Lead:
        with session_scope() as session:
            query = select(Lead) if ref is None else select(Lead).where(Lead.ref == ref)
            return session.scalars(query).one()

    def timer(self, lead_id: int) -> EscalationTimer | None:
        return escalation_timer(lead_id)

    def make_due(self, lead_id: int) -> None:
        make_due(lead_id)

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs if path.exists())

    def task_messages(self) -> str:
        """Every Redis command on our database, with base64 message bodies decoded."""
        if not self.monitor_log.exists():
            return ""
        lines = [line for line in self.monitor_log.read_text(errors="replace").splitlines()
                 if f"[{self.redis_db} " in line]
        decoded = []
        for token in re.findall(r"[A-Za-z0-9+/]{16,}={0,2}", "\n".join(lines)):
            try:
                decoded.append(b64decode(token + "=" * (-len(token) % 4)).decode("utf-8", errors="replace"))
            except ValueError:
                continue
        return "\n".join(lines + decoded)


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen([sys.executable, "-m", "worker.cli", *args], env=env, stdout=handle,
                                stderr=subprocess.STDOUT)


@pytest.fixture
def desk(pg_settings: Settings, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Desk]:
    redis.Redis.from_url(redis_url).flushdb()
    roster = tmp_path / "roster.toml"
    roster.write_text(ALWAYS_ON, encoding="utf-8")
    port = free_port()
    web_url = f"http://127.0.0.1:{port}"
    with FakeProviders() as providers:
        extra = {
            "CELERY_BROKER_URL": redis_url,
            "HUBSPOT_TOKEN": "pat-na1-test-token",
            "HUBSPOT_BASE_URL": providers.url,
            "TWILIO_ACCOUNT_SID": TWILIO_SID,
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "TWILIO_FROM_NUMBER": CENTER_NUMBER,
            "TWILIO_API_BASE_URL": providers.url,
            "ADMITFLOW_PUBLIC_URL": web_url,
            "ROSTER_FILE": str(roster),
            "ESCALATION_INTERVAL_SECONDS": "1",
            "ADMITFLOW_LOG_LEVEL": "INFO",
        }
        settings = configure_environment(monkeypatch, tmp_path, pg_settings.database_url, **extra)
        env = {**os.environ, **TEST_KEYS}
        with session_scope() as session:
            register_form(session, site=settings.site, form_object=json.loads((EXAMPLES / "form.json").read_text()))
        logs = [tmp_path / "web.log", tmp_path / "worker.log", tmp_path / "beat.log"]
        monitor_log = tmp_path / "redis-monitor.log"
        redis_db = int(redis_url.rsplit("/", 1)[1])
        host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
        with monitor_log.open("wb") as handle:
            monitor = subprocess.Popen(["redis-cli", "-h", host_port.split(":")[0], "-p", host_port.split(":")[1],
                                        "monitor"], stdout=handle, stderr=subprocess.STDOUT)
        processes = [
            _start(["web", "--port", str(port)], env, logs[0]),
            _start(["worker", "--concurrency", "4"], env, logs[1]),
            _start(["beat", "--schedule", str(tmp_path / "celerybeat-schedule")], env, logs[2]),
        ]
        built = Desk(web_url, providers, settings, logs, monitor_log, redis_db)
        try:
            wait_for(lambda: healthy(web_url), timeout=30, what="the web server's /healthz")
            yield built
        finally:
            for process in [*processes, monitor]:
                process.send_signal(signal.SIGTERM)
            for process in [*processes, monitor]:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


def twiml(response: requests.Response) -> ET.Element:
    assert response.status_code == 200, response.text
    return ET.fromstring(response.text)  # noqa: S314 (TwiML our own server generated)


def test_an_unclaimed_lead_is_texted_then_called_then_escalated_and_no_phi_reaches_staff_logs_or_tasks(
    desk: Desk,
) -> None:
    desk.post_entry(make_entry(801, **CANARY))
    wait_for(lambda: len(desk.texts_to(AVERY)) == 1, what="the alert text to the on-call person")
    lead = desk.lead()
    wait_for(lambda: desk.timer(lead.id) is not None, what="the reminder timer")
    [first_text] = desk.texts_to(AVERY)
    assert first_text["From"] == CENTER_NUMBER
    assert first_text["StatusCallback"] == f"{desk.web_url}/hooks/twilio/status/message"
    time.sleep(2)
    assert desk.providers.state.voice_calls == [], "nothing may happen before the reminder is due"

    desk.make_due(lead.id)
    wait_for(lambda: len(desk.calls_to(AVERY)) == 1, what="the voice reminder to the on-call person")
    [reminder] = desk.calls_to(AVERY)
    assert reminder["From"] == CENTER_NUMBER
    assert re.fullmatch(re.escape(desk.web_url) + r"/hooks/twilio/voice/reminder\?alert=\d+", reminder["Url"])
    assert reminder["StatusCallback"] == f"{desk.web_url}/hooks/twilio/status/call"
    spoken = twiml(desk.as_twilio(reminder["Url"].removeprefix(desk.web_url),
                                  {"CallSid": reminder["sid"], "CallStatus": "in-progress"}))
    assert spoken_ref(lead.ref) in (spoken.findtext("Gather/Say") or "")

    desk.as_twilio("/hooks/twilio/status/call", {"CallSid": reminder["sid"], "CallStatus": "no-answer"})
    wait_for(lambda: len(desk.calls_to(BLAKE)) == 1 and len(desk.texts_to(BLAKE)) == 1,
             what="escalation to the second person at once after the unanswered call")

    desk.make_due(lead.id)
    wait_for(lambda: len(desk.calls_to(DANA)) == 1 and len(desk.texts_to(DANA)) == 1,
             what="escalation to the supervisor")
    assert len(desk.texts_to(AVERY)) == 1 and len(desk.calls_to(AVERY)) == 1

    staff_facing = [sms["Body"] for sms in desk.providers.state.sms] + [ET.tostring(spoken, encoding="unicode")]
    logs, tasks = desk.log_text(), desk.task_messages()
    assert "admitflow.escalate" in tasks and "admitflow.deliver_outbox" in tasks
    for phi in CANARY_STRINGS:
        for text_ in staff_facing:
            assert phi not in text_, f"{phi!r} reached a staff text or call"
        assert phi not in logs, f"{phi!r} reached a log line"
        assert phi not in tasks, f"{phi!r} reached a task message"


def test_a_claim_by_sms_stops_every_further_alert_and_gives_the_crm_task_to_the_claimer(desk: Desk) -> None:
    desk.post_entry(make_entry(802))
    wait_for(lambda: len(desk.texts_to(AVERY)) == 1, what="the alert text")
    wait_for(lambda: desk.lead().crm_task_id is not None, what="the CRM callback task")
    lead = desk.lead()

    reply = twiml(desk.as_twilio("/hooks/twilio/sms",
                                 {"MessageSid": "SM" + "7" * 32, "From": BLAKE, "To": CENTER_NUMBER,
                                  "Body": f"claim {lead.ref.lower()}"}))

    assert (reply.findtext("Message") or "").startswith(f"Claimed {lead.ref} for you")
    task_path = f"/crm/v3/objects/tasks/{lead.crm_task_id}"
    wait_for(lambda: any(call.method == "PATCH" and call.path == task_path
                         for call in desk.providers.state.calls), what="the CRM task owner update")
    [patch] = [call for call in desk.providers.state.calls if call.method == "PATCH" and call.path == task_path]
    assert patch.body == {"properties": {"hubspot_owner_id": "1002"}}
    wait_for(lambda: desk.providers.state.tasks[lead.crm_task_id]["properties"]["hubspot_owner_id"] == "1002",
             what="the CRM task to belong to the claimer")
    desk.make_due(lead.id)
    time.sleep(3)
    assert desk.providers.state.voice_calls == [] and len(desk.providers.state.sms) == 1
    with session_scope() as session:
        claim = session.scalars(select(Claim)).one()
        assert (claim.staff_id, claim.channel, claim.first_alert_at is not None) == ("blake", "sms", True)


def test_pressing_1_bridges_and_a_bridged_call_with_no_answer_schedules_the_next_attempt_on_the_cadence(
    desk: Desk,
) -> None:
    desk.post_entry(make_entry(803, **{"3": "(617) 555-0188"}))
    wait_for(lambda: len(desk.texts_to(AVERY)) == 1, what="the alert text")
    lead = desk.lead()
    wait_for(lambda: desk.timer(lead.id) is not None, what="the reminder timer")
    desk.make_due(lead.id)
    wait_for(lambda: len(desk.calls_to(AVERY)) == 1, what="the voice reminder")
    reminder_path = desk.calls_to(AVERY)[0]["Url"].removeprefix(desk.web_url)

    bridge = twiml(desk.as_twilio(reminder_path.replace("/voice/reminder", "/voice/keypress"), {"Digits": "1"}))

    dial = bridge.find("Dial")
    assert dial is not None and dial.attrib["callerId"] == CENTER_NUMBER and dial.findtext("Number") == "+16175550188"
    before = utcnow()
    told = twiml(desk.as_twilio(dial.attrib["action"].removeprefix(desk.web_url),
                                {"DialCallStatus": "no-answer", "DialCallDuration": "0"}))
    assert "You will get a call to try again" in (told.findtext("Say") or "")
    timer = desk.timer(lead.id)
    assert timer is not None and timer.purpose == "callback" and timer.callback_attempts == 1
    assert before + timedelta(minutes=14) < timer.due_at < utcnow() + timedelta(minutes=16)

    desk.make_due(lead.id)
    wait_for(lambda: len(desk.calls_to(AVERY)) == 2, what="the call-back attempt call to the claimer")
    assert desk.calls_to(BLAKE) == [] and len(desk.providers.state.sms) == 1


def test_a_request_to_be_called_on_a_later_day_is_reminded_then_not_in_five_minutes(desk: Desk) -> None:
    form = json.loads((EXAMPLES / "form.json").read_text())
    form["id"] = 2
    form["fields"].append({"id": 7, "type": "date", "label": "Best time to call us?", "inputs": None})
    with session_scope() as session:
        register_form(session, site=desk.settings.site, form_object=form)

    desk.post_entry(make_entry(804, form_id="2", **{"7": "2030-01-15", "3": "(617) 555-0186"}))
    wait_for(lambda: len(desk.texts_to(AVERY)) == 1, what="the alert text, sent at once")
    lead = desk.lead()
    wait_for(lambda: desk.timer(lead.id) is not None, what="the reminder timer")
    wait_for(lambda: desk.lead().crm_task_id is not None, what="the CRM callback task")

    nine_am_in_boston = datetime(2030, 1, 15, 14, 0, tzinfo=UTC)
    timer = desk.timer(lead.id)
    assert timer is not None and timer.due_at == nine_am_in_boston
    task = desk.providers.state.tasks[desk.lead().crm_task_id or ""]
    assert task["properties"]["hs_timestamp"] == "2030-01-15T14:00:00.000Z"
    time.sleep(3)  # beat looks for due timers every second: none is due
    assert desk.providers.state.voice_calls == []


def test_two_staff_claiming_at_the_same_moment_leave_exactly_one_winner(desk: Desk) -> None:
    for round_ in range(3):
        desk.post_entry(make_entry(900 + round_, **{
            "1.3": ("Morgan", "Riley", "Quinn")[round_], "2": f"person{round_}@example.org",
            "3": f"(617) 555-016{round_}", "ip": f"192.0.2.{60 + round_}", "user_agent": f"Example/{round_}",
        }))
        wait_for(lambda n=round_: len(desk.texts_to(AVERY)) == n + 1, what="the alert text")
        with session_scope() as session:
            ref = session.scalars(select(Lead.ref).order_by(Lead.id.desc()).limit(1)).one()
        barrier = threading.Barrier(2)

        def claim(sender_and_body: tuple[str, str], barrier: threading.Barrier = barrier) -> str:
            sender, body = sender_and_body
            barrier.wait()
            return twiml(desk.as_twilio("/hooks/twilio/sms", {"From": sender, "Body": body})).findtext("Message") or ""

        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = list(pool.map(claim, [(AVERY, "1"), (BLAKE, f"CLAIM {ref}")]))

        winners = [answer for answer in answers if answer.startswith(f"Claimed {ref} for you")]
        losers = [answer for answer in answers if answer.startswith(f"{ref} is already claimed by")]
        assert (len(winners), len(losers)) == (1, 1), answers
        with session_scope() as session:
            lead_id = session.scalars(select(Lead.id).where(Lead.ref == ref)).one()
            assert len(session.scalars(select(Claim).where(Claim.lead_id == lead_id)).all()) == 1


def test_due_timers_are_taken_with_skip_locked_so_a_row_another_run_holds_is_passed_over(
    pg_settings: Settings, form_object: dict[str, Any]
) -> None:
    with new_session() as setup:
        ids = new_lead(setup, pg_settings, form_object)
        lead_id = setup.get_one(OutboxMessage, ids[OutboxKind.STAFF_ALERT]).lead_id
        now = utcnow()
        start_escalation(setup, lead_id, ids[OutboxKind.STAFF_ALERT], due_at=now, now=now)
        setup.commit()
    holder, taker = new_session(), new_session()
    try:
        holder.scalars(select(EscalationTimer).with_for_update()).one()
        taker.execute(text("SET lock_timeout = '2s'"))

        assert lease_due_timers(taker, now + timedelta(seconds=1)) == []

        holder.rollback()
        assert len(lease_due_timers(taker, now + timedelta(seconds=1))) == 1
    finally:
        holder.close()
        taker.close()


def test_the_center_numbers_send_rate_is_shared_by_every_process_through_redis(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    # One clock for both limiters, moved only by their waiting: which second each send lands in is then exact.
    clock = [1_800_000_000.25]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    workers = [SendRate(redis.Redis.from_url(redis_url), CENTER_NUMBER, 2, clock=lambda: clock[0], sleep=sleep)
               for _ in range(2)]
    seconds = []

    for rate in [*workers, *workers, workers[0]]:
        rate.wait_for_slot()
        seconds.append(int(clock[0]))

    assert seconds == [1_800_000_000, 1_800_000_000, 1_800_000_001, 1_800_000_001, 1_800_000_002]

"""A running admissions desk for the phone-line scenarios: `admitflow web`, `worker` and `beat` on PostgreSQL and
Redis, HubSpot and Twilio's REST API faked on loopback (tests/fakes/providers.py), and Twilio's webhooks played by
the test, each signed with the `twilio` package's own validator. One stack serves a whole module of scenarios, so
each scenario uses its own caller numbers and looks only at what it caused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import select, update
from twilio.request_validator import RequestValidator

from config.settings import Settings, get_settings
from tests.conftest import EXAMPLES, TEST_KEYS, WEBHOOK_SECRET, configure_environment, empty_postgres
from tests.fakes.providers import FakeProviders
from tests.support.processes import free_port, healthy, wait_for
from worker.intake.entries import register_form
from worker.staff.alerts import can_call_back
from worker.staff.services import default_services
from worker.store.db import dispose_engines, session_scope, utcnow
from worker.store.models import EscalationTimer, Lead, LeadStatus, PhoneCall, TimerState
from worker.store.phi import reset_vault

TWILIO_SID = "AC" + "0" * 30 + "17"
TWILIO_TOKEN = "phone-line-auth-token"
CENTER_NUMBER = "+18555550100"
AVERY, BLAKE, DANA = "+16175550101", "+16175550102", "+16175550104"


@dataclass
class LineStack:
    web_url: str
    port: int
    providers: FakeProviders
    settings: Settings
    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]]

    def as_twilio(self, path_or_url: str, params: dict[str, str]) -> requests.Response:
        """Play one of Twilio's webhooks: form-encoded, signed for the public URL it is sent to."""
        url = path_or_url if path_or_url.startswith("http") else self.web_url + path_or_url
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
        return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=15)

    def twiml(self, path_or_url: str, params: dict[str, str]) -> ET.Element:
        response = self.as_twilio(path_or_url, params)
        assert response.status_code == 200, response.text
        return ET.fromstring(response.text)  # noqa: S314 (TwiML our own server generated)

    def post_entry(self, entry: dict[str, Any]) -> None:
        response = requests.post(f"{self.web_url}/hooks/gravityforms", data=json.dumps(entry), timeout=10,
                                 headers={"X-Admitflow-Secret": WEBHOOK_SECRET, "Content-Type": "application/json"})
        assert response.status_code == 202, response.text

    def texts_to(self, phone: str) -> list[dict[str, str]]:
        return [sms for sms in self.providers.state.sms if sms["To"] == phone]

    def calls_to(self, phone: str) -> list[dict[str, str]]:
        return [call for call in self.providers.state.voice_calls if call["To"] == phone]

    def leads_with_phone(self, phone: str | None) -> list[Lead]:
        """Unmerged leads with this phone (None: leads nobody can call back)."""
        with session_scope() as session:
            leads = session.scalars(select(Lead).where(Lead.status != LeadStatus.MERGED)).all()
            if phone is None:
                return [lead for lead in leads if not can_call_back(lead)]
            return [lead for lead in leads if lead.phone == phone]

    def lead_with_phone(self, phone: str) -> Lead:
        wait_for(lambda: len(self.leads_with_phone(phone)) == 1, what="the caller's lead")
        return self.leads_with_phone(phone)[0]

    def call(self, sid: str) -> PhoneCall:
        with session_scope() as session:
            return session.scalars(select(PhoneCall).where(PhoneCall.call_sid == sid)).one()

    def timer(self, lead_id: int) -> EscalationTimer | None:
        return escalation_timer(lead_id)

    def make_due(self, lead_id: int) -> None:
        make_due(lead_id)

    def stop_reminders(self) -> None:
        """End every pending reminder, so one scenario's leads do not call staff during the next."""
        with session_scope() as session:
            session.execute(update(EscalationTimer).where(EscalationTimer.state == TimerState.PENDING)
                            .values(state=TimerState.DONE))

    def restart_web(self) -> None:
        """Stop the web server and start another on the same port: what a deploy does mid-call."""
        self.processes["web"].send_signal(signal.SIGTERM)
        self.processes["web"].wait(timeout=20)
        wait_for(lambda: not healthy(self.web_url), timeout=10, what="the web server to stop")
        self.processes["web"] = _start(["web", "--port", str(self.port)], self.env, self.logs / "web-2.log")
        wait_for(lambda: healthy(self.web_url), timeout=30, what="the restarted web server's /healthz")

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.logs.glob("*.log")))

    def metric(self, name: str, **labels: str) -> float:
        """One sample from GET /metrics."""
        wanted = name + ("{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}" if labels else "")
        for line in requests.get(f"{self.web_url}/metrics", timeout=10).text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {wanted} in /metrics")


def escalation_timer(lead_id: int) -> EscalationTimer | None:
    with session_scope() as session:
        return session.scalar(select(EscalationTimer).where(EscalationTimer.lead_id == lead_id))


def make_due(lead_id: int) -> None:
    """Move time for one lead: its reminder is due now. Waits for a step in progress to commit first, or the
    step's own "next due in five minutes" would overwrite this."""
    def settled() -> bool:
        timer = escalation_timer(lead_id)
        return timer is not None and timer.leased_until is None

    wait_for(settled, what="the escalation step in progress to finish")
    with session_scope() as session:
        session.execute(update(EscalationTimer).where(EscalationTimer.lead_id == lead_id).values(due_at=utcnow()))


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen([sys.executable, "-m", "worker.cli", *args], env=env, stdout=handle,
                                stderr=subprocess.STDOUT)


@contextmanager
def line_stack(postgres_url: str, redis_url: str, tmp: Path, roster: str, **extra: str) -> Iterator[LineStack]:
    """Web, worker and beat on an empty database and Redis index, `roster` as ROSTER_FILE, VOICE_INBOUND=ring."""
    redis.Redis.from_url(redis_url).flushdb()
    roster_file = tmp / "roster.toml"
    roster_file.write_text(roster, encoding="utf-8")
    port = free_port()
    web_url = f"http://127.0.0.1:{port}"
    with FakeProviders() as providers, pytest.MonkeyPatch.context() as monkeypatch:
        settings = configure_environment(monkeypatch, tmp, postgres_url, **{
            "CELERY_BROKER_URL": redis_url, "HUBSPOT_TOKEN": "pat-na1-test-token", "HUBSPOT_BASE_URL": providers.url,
            "TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "TWILIO_FROM_NUMBER": CENTER_NUMBER,
            "TWILIO_API_BASE_URL": providers.url, "ADMITFLOW_PUBLIC_URL": web_url, "ROSTER_FILE": str(roster_file),
            "ESCALATION_INTERVAL_SECONDS": "1", "ADMITFLOW_LOG_LEVEL": "INFO", "VOICE_INBOUND": "ring", **extra,
        })
        empty_postgres(settings)
        with session_scope() as session:
            register_form(session, site=settings.site, form_object=json.loads((EXAMPLES / "form.json").read_text()))
        env = {**os.environ, **TEST_KEYS}
        logs = tmp / "logs"
        logs.mkdir()
        processes = {
            "web": _start(["web", "--port", str(port)], env, logs / "web.log"),
            "worker": _start(["worker", "--concurrency", "2"], env, logs / "worker.log"),
            "beat": _start(["beat", "--schedule", str(tmp / "celerybeat-schedule")], env, logs / "beat.log"),
        }
        try:
            wait_for(lambda: healthy(web_url), timeout=30, what="the web server's /healthz")
            # A loaded machine can take longer to start the worker than a scenario waits for a text.
            wait_for(lambda: "ready." in (logs / "worker.log").read_text(errors="replace"), timeout=60,
                     what="the Celery worker to be ready")
            yield LineStack(web_url, port, providers, settings, env, logs, processes)
        finally:
            for process in processes.values():
                process.send_signal(signal.SIGTERM)
            for process in processes.values():
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            get_settings.cache_clear()
            default_services.cache_clear()
            reset_vault()
            dispose_engines()

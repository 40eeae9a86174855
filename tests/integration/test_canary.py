"""Canary: distinctive PHI through every door and every failure, then none of it anywhere but encrypted columns.

The real web server and Celery worker run on PostgreSQL and Redis; a poll runs as the CLI does it from cron.
HubSpot, Twilio and Gravity Forms are a loopback fake whose error answers quote the PHI they were sent, as real
providers do. Afterwards every log line of those processes, every command Redis executed on the test's database
(MONITOR, with base64 message bodies decoded) and every column of every table are searched for the canaries.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests
from sqlalchemy import func, literal_column, select

from config.settings import Settings
from tests.conftest import EXAMPLES, WEBHOOK_SECRET, make_entry
from tests.fakes.providers import FakeProviders, ProviderState, _Handler
from tests.integration.test_end_to_end import provider_environment
from tests.support.processes import free_port, healthy, wait_for
from worker.store.db import Base, session_scope
from worker.store.models import OutboxMessage, OutboxState, Submission, SubmissionState

pytestmark = pytest.mark.services


@dataclass(frozen=True)
class Canary:
    """A fictional person whose every detail is a string found nowhere else."""

    first: str
    last: str
    email: str
    phone: str  # as typed: (617) 555-01xx
    message: str

    @property
    def e164(self) -> str:
        return "+1" + re.sub(r"\D", "", self.phone)

    @property
    def needles(self) -> list[str]:
        return [self.first, self.last, self.email.split("@")[0], self.e164[2:], self.message.split()[0]]

    def fields(self) -> dict[str, str]:
        return {"1.3": self.first, "1.6": self.last, "2": self.email, "3": self.phone, "4": self.message,
                "6.1": "OK to text me"}


def canary(n: int, first: str, last: str) -> Canary:
    return Canary(first, last, f"{first.lower()}.canary{n}@example.org", f"(617) 555-01{80 + n}",
                  f"Wombracht{n}message my brother needs help with drinking")


HAPPY = canary(1, "Quorvania", "Thistlewaite")  # webhook; the staff text and the person's acknowledgement fail
CRM_REJECTS = canary(2, "Belvandra", "Mockingsworth")  # HubSpot 400 quoting the contact
CRM_CONFLICT = canary(3, "Ostrevana", "Puddingfield")  # HubSpot 409 quoting the contact
CRM_FAILS = canary(4, "Zephyrine", "Gallowbrook")  # HubSpot 500s quoting the request, then success
POLLED = canary(5, "Marlowena", "Cobblestaff")  # arrives only by the Gravity Forms poll
POLL_ERROR = canary(6, "Tindravel", "Oakenshawe")  # quoted by Gravity Forms in its error answers
NO_CONTACT = canary(7, "Ulvadora", "Fenwickham")  # no valid phone or email: flagged
SCREENED = canary(8, "Prindavel", "Haverstoke")  # a link in the name: flagged
REJECTED = canary(9, "Ysoldavia", "Brackenmoor")  # 4xx at the webhook: not JSON, no id, bad ids, wrong secret
ALL = (HAPPY, CRM_REJECTS, CRM_CONFLICT, CRM_FAILS, POLLED, POLL_ERROR, NO_CONTACT, SCREENED, REJECTED)


# Where HubSpot creates contacts, one by one or in a batch: where it answers 409 for an existing email.
CONTACT_WRITES = ("/crm/v3/objects/contacts", "/crm/v3/objects/contacts/batch/create",
                  "/crm/v3/objects/contacts/batch/upsert")


def quoted(who: Canary) -> str:
    return f"email {who.email}, phone {who.e164}, name {who.first} {who.last}"


class EchoingHandler(_Handler):
    """The fake providers, plus answers that quote PHI the way real error bodies do, and a Gravity Forms API."""

    server: EchoingProviders

    def _route(self, state: ProviderState, body: Any) -> None:
        path = self.path.split("?", 1)[0]
        sent = json.dumps(body or {})
        counts = self.server.counts
        if path.startswith("/wp-json/gf/v2/"):
            return self._gravity_forms(path)
        if path.startswith("/crm/") and self._crm_error(path, sent, counts):
            return None
        if path.endswith("/Messages.json") and self._twilio_error(body, counts):
            return None
        return super()._route(state, body)

    def _crm_error(self, path: str, sent: str, counts: dict[str, int]) -> bool:
        if CRM_REJECTS.email in sent:
            self._send(400, {"status": "error", "category": "VALIDATION_ERROR",
                             "message": f"Property values were not valid: {quoted(CRM_REJECTS)}",
                             "errors": [{"message": f"{CRM_REJECTS.email} is invalid", "context": {}}]})
            return True
        if CRM_CONFLICT.email in sent and path in CONTACT_WRITES and not counts.get("conflict"):
            counts["conflict"] = 1
            existing = self.server.state.new_id()
            self.server.state.contacts[existing] = {"properties": {"email": CRM_CONFLICT.email}, "_contact": None,
                                                    "_at": 0.0}  # indexed long ago
            self._send(409, {"status": "error", "category": "CONFLICT",
                             "message": f"Contact already exists. Existing ID: {existing} ({quoted(CRM_CONFLICT)})"})
            return True
        if CRM_FAILS.email in sent and counts.get("crm_fails", 0) < 2:
            counts["crm_fails"] = counts.get("crm_fails", 0) + 1
            self._send(500, {"status": "error", "message": f"internal error while handling {quoted(CRM_FAILS)}"})
            return True
        return False

    def _twilio_error(self, body: dict[str, str], counts: dict[str, int]) -> bool:
        to = body.get("To", "")
        if any(to == who.e164 for who in ALL):
            # The person's acknowledgement: a transient failure, then Twilio's invalid-number error, both quoting it.
            attempt = counts[to] = counts.get(to, 0) + 1
            if attempt == 1:
                self._send(500, {"code": 20500, "message": f"Internal error sending to {to}", "status": 500})
            else:
                self._send(400, {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number.",
                                 "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})
            return True
        if not counts.get("staff_sms_failed"):
            counts["staff_sms_failed"] = 1
            self._send(400, {"code": 30999, "message": f"Cannot send '{body.get('Body')}' to {to}", "status": 400})
            return True
        return False

    def _gravity_forms(self, path: str) -> None:
        if path == "/wp-json/gf/v2/forms/1":
            self._send(200, json.loads((EXAMPLES / "form.json").read_text()))
        elif path == "/wp-json/gf/v2/forms/1/entries":
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
            entry = make_entry(9001, date_created=now, ip="198.51.100.95", **POLLED.fields())
            self._send(200, {"total_count": 1, "entries": [entry]})
        elif path == "/wp-json/gf/v2/forms/2":
            self._send(400, {"code": "rest_invalid_param",
                             "message": f"Invalid parameter: {POLL_ERROR.first} {POLL_ERROR.last} {POLL_ERROR.email}",
                             "data": {"status": 400, "params": {"search": POLL_ERROR.e164}}})
        else:
            self._send(500, {"code": "internal_server_error",
                             "message": f"Fatal error near '{POLL_ERROR.message}' for {POLL_ERROR.email}"})


class EchoingProviders(FakeProviders):
    def __init__(self) -> None:
        super().__init__()
        self.RequestHandlerClass = EchoingHandler
        self.counts: dict[str, int] = {}  # how often each scripted failure has been answered


class RedisTap:
    """Every command Redis runs on one database, through MONITOR, from start to `stop()`."""

    def __init__(self, url: str) -> None:
        self.db = urlsplit(url).path.strip("/") or "0"
        self.commands: list[str] = []
        # MONITOR waits for commands as long as Redis is idle: no read timeout (redis-py 8 defaults to 5 s).
        self._monitor = redis.Redis.from_url(url, socket_timeout=None).monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        try:
            for command in self._monitor.listen():
                if str(command["db"]) == self.db:
                    self.commands.append(command["command"])
        except (redis.ConnectionError, ValueError, AttributeError):
            return

    def stop(self) -> str:
        self._monitor.connection.disconnect()
        self._thread.join(timeout=5)
        return "\n".join(self.commands)


@dataclass
class CanaryStack:
    web_url: str
    providers: EchoingProviders
    env: dict[str, str]
    logs: list[Path]
    tap: RedisTap
    hubspot_batches: bool

    def post(self, body: bytes, secret: str = WEBHOOK_SECRET) -> requests.Response:
        headers = {"X-Admitflow-Secret": secret, "Content-Type": "application/json"}
        return requests.post(f"{self.web_url}/hooks/gravityforms", data=body, headers=headers, timeout=10)

    def poll(self, log: Path) -> str:
        self.logs.append(log)
        with log.open("wb") as handle:
            subprocess.run([sys.executable, "-m", "worker.cli", "poll", "run"], env=self.env, stdout=handle,
                           stderr=subprocess.STDOUT, timeout=60, check=True)
        return log.read_text()


@pytest.fixture(params=["false", "true"], ids=["one_lead_per_call", "hubspot_batches"])
def canary_stack(
    pg_settings: Settings, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[CanaryStack]:
    with EchoingProviders() as providers:
        _, env = provider_environment(
            monkeypatch, tmp_path, pg_settings.database_url, redis_url, providers,
            HUBSPOT_CUSTOM_PROPERTIES=request.param,
            PERSON_ACK_SMS="true", ADMITFLOW_RETRY_FIRST_SECONDS="0.2", ADMITFLOW_MAX_DELIVERY_ATTEMPTS="4",
            GRAVITYFORMS_BASE_URL=providers.url, GRAVITYFORMS_CONSUMER_KEY="ck_test",
            GRAVITYFORMS_CONSUMER_SECRET="cs_test", GRAVITYFORMS_FORM_IDS="1,2,3",
        )
        tap = RedisTap(redis_url)
        port = free_port()
        commands = {"web": ["web", "--port", str(port)], "worker": ["worker", "--concurrency", "2"]}
        processes, logs = [], []
        for name, args in commands.items():
            logs.append(tmp_path / f"{name}.log")
            with logs[-1].open("wb") as handle:
                processes.append(subprocess.Popen([sys.executable, "-m", "worker.cli", *args], env=env,
                                                  stdout=handle, stderr=subprocess.STDOUT))
        built = CanaryStack(f"http://127.0.0.1:{port}", providers, env, logs, tap, request.param == "true")
        try:
            wait_for(lambda: healthy(built.web_url), timeout=30, what="the web server's /healthz")
            yield built
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            tap.stop()


def entry_json(entry_id: int, who: Canary, **overrides: Any) -> bytes:
    return json.dumps(make_entry(entry_id, ip=f"198.51.100.{entry_id % 250}", **{**who.fields(), **overrides})).encode()


def settled() -> bool:
    with session_scope() as session:
        waiting = session.scalar(
            select(func.count()).select_from(Submission).where(Submission.state == SubmissionState.RECEIVED)
        )
        unfinished = session.scalar(
            select(func.count()).select_from(OutboxMessage)
            .where(OutboxMessage.state.not_in([OutboxState.DELIVERED, OutboxState.DEAD]))
        )
    return waiting == 0 and unfinished == 0


def every_stored_value() -> list[tuple[str, str]]:
    """(table, value) for every column of every row, encrypted columns as their stored ciphertext."""
    found = []
    with session_scope() as session:
        for table in Base.metadata.sorted_tables:
            # Not select(table): that would decrypt the encrypted columns.
            for row in session.execute(select(literal_column("*")).select_from(table)):
                found.extend((table.name, str(value)) for value in row if value is not None)
    return found


def decoded_base64(haystack: str) -> str:
    """Kombu puts message bodies in base64: decode every long base64 run, so their content is searched too."""
    decoded = []
    for token in re.findall(r"[A-Za-z0-9+/]{16,}={0,2}", haystack):
        try:
            decoded.append(base64.b64decode(token + "=" * (-len(token) % 4)).decode("utf-8", "replace"))
        except (binascii.Error, ValueError):
            continue
    return "\n".join(decoded)


def hits(haystack: str, needles: list[str]) -> list[str]:
    """Needles found as written, or a phone's digits however the line formats them."""
    lowered, digits = haystack.lower(), re.sub(r"\D", "", haystack)
    return [needle for needle in needles if needle.lower() in lowered or (needle.isdigit() and needle in digits)]


def test_no_canary_reaches_a_log_line_a_redis_message_or_a_stored_plaintext_field(
    canary_stack: CanaryStack, tmp_path: Path
) -> None:
    stack = canary_stack
    scripted = stack.providers.counts
    answers = [stack.post(entry_json(n, who)) for n, who in enumerate(ALL[:4], start=1)]
    answers.append(stack.post(entry_json(7, NO_CONTACT, **{"3": "no phone", "2": "ulvadora at example"})))
    answers.append(stack.post(entry_json(8, SCREENED, **{"1.6": "visit www.prindavel-canary.com"})))
    answers.append(stack.post(entry_json(9, REJECTED, form_id="77")))  # an unregistered form: kept, 422
    for body in (
        b"{not json at all " + REJECTED.email.encode() + b" " + REJECTED.first.encode(),
        json.dumps({k: v for k, v in json.loads(entry_json(10, REJECTED)).items() if k != "id"}).encode(),
        entry_json(11, REJECTED, id=f"{REJECTED.first}-11", form_id=REJECTED.e164),
        b"\xff\xfe" + REJECTED.email.encode(),
    ):
        answers.append(stack.post(body))
    answers.append(stack.post(entry_json(12, REJECTED), secret="wrong-secret"))
    assert [answer.status_code for answer in answers] == [202] * 6 + [422, 400, 422, 422, 400, 401]
    poll_output = stack.poll(tmp_path / "poll.log")
    assert "main form 1: seen 1, new 1, ok" in poll_output
    assert "main form 2:" in poll_output and "main form 3:" in poll_output

    wait_for(settled, timeout=90, what="every submission processed and every outbox row delivered or dead")

    with session_scope() as session:
        states = dict(session.execute(select(Submission.entry_id, Submission.state)).all())
        dead = session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == "dead"))
    assert states == {"1": "processed", "2": "processed", "3": "processed", "4": "processed", "7": "flagged",
                      "8": "flagged", "9": "flagged", "9001": "processed"}
    assert dead == 1 + 1 + 5, "the CRM 400, the refused staff text and the five acknowledgements end dead"
    assert scripted["conflict"] == 1 and scripted["crm_fails"] == 2 and scripted["staff_sms_failed"] == 1
    batch_calls = [call for call in stack.providers.state.calls if "/batch/" in call.path]
    assert bool(batch_calls) == stack.hubspot_batches
    assert all(scripted[who.e164] == 2 for who in (HAPPY, CRM_REJECTS, CRM_CONFLICT, CRM_FAILS, POLLED))
    with session_scope() as session:
        ack_errors = session.scalars(select(OutboxMessage.last_error).where(OutboxMessage.kind == "person_ack")).all()
    assert all(error and "ROSTER_FILE" not in error for error in ack_errors), "a person's number is not staff's"
    needles = [needle for who in ALL for needle in who.needles]
    logs = "\n".join(path.read_text(errors="replace") for path in stack.logs)
    assert "Twilio" in logs and "HubSpot" in logs, "the failures were logged (without their bodies)"
    redis_traffic = stack.tap.stop()
    assert "admitflow" in redis_traffic, "MONITOR saw the broker's traffic"
    assert '"callbacks"' in decoded_base64(redis_traffic), "the task bodies were decoded"
    stored = every_stored_value()

    assert hits("\n".join(answer.text for answer in answers), needles) == [], "PHI in an answer to the sender"
    assert hits(logs, needles) == [], "PHI in a log line"
    assert hits(redis_traffic + "\n" + decoded_base64(redis_traffic), needles) == [], "PHI in a Redis command"
    leaked = sorted({(table, needle) for table, value in stored for needle in hits(value, needles)})
    assert leaked == [], "PHI stored outside an encrypted column"

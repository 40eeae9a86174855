"""A loopback stand-in for HubSpot CRM v3 and Twilio's Messages and Calls APIs, for tests whose worker runs in another
process (where `responses` cannot reach). It keeps what it was sent, answers in the documented shapes, and can
be told to fail a share of calls.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    at: float = field(default_factory=time.time)


@dataclass
class ProviderState:
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    sms: list[dict[str, str]] = field(default_factory=list)
    voice_calls: list[dict[str, str]] = field(default_factory=list)  # Twilio Calls created
    calls: list[Recorded] = field(default_factory=list)
    failure_rate: float = 0.0
    retry_after: str = "1"  # the Retry-After of the 429s that failure_rate answers
    # Seconds to hold the answer to a contact or task creation after storing it (a crash test kills the worker
    # then); `created` is set as soon as one is stored.
    create_answer_delay: float = 0.0
    created: threading.Event = field(default_factory=threading.Event)
    next_id: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)


def _matches(record: dict[str, Any], groups: list[dict[str, Any]]) -> bool:
    for group in groups:
        if all(_filter_ok(record, item) for item in group["filters"]):
            return True
    return False


def _filter_ok(record: dict[str, Any], item: dict[str, Any]) -> bool:
    if item["propertyName"] == "associations.contact":
        return bool(record.get("_contact") == item["value"])
    return bool(record["properties"].get(item["propertyName"]) == item["value"])


class _Handler(BaseHTTPRequestHandler):
    server: FakeProviders
    _answer: tuple[int, Any, dict[str, str] | None]
    _delay: float

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._answer = (status, payload, headers)

    def _write(self, status: int, payload: Any, headers: dict[str, str] | None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            body: Any = {key: values[0] for key, values in parse_qs(raw.decode()).items()}
        else:
            body = json.loads(raw) if raw else None
        state = self.server.state
        self._answer = (500, {}, None)
        self._delay = 0.0
        with state.lock:
            state.calls.append(Recorded(self.command, self.path, body))
            if state.failure_rate and random.random() < state.failure_rate:
                if random.random() < 0.5:
                    self._send(429, {"status": "error", "category": "RATE_LIMITS"}, {"Retry-After": state.retry_after})
                else:
                    self._send(502, {"status": "error"})
            else:
                self._route(state, body)
        # Answered outside the lock, so a held answer does not stall other requests.
        time.sleep(self._delay)
        try:
            self._write(*self._answer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller is gone: a crash test killed it while the answer was held

    def _route(self, state: ProviderState, body: Any) -> None:
        path = self.path.split("?", 1)[0]
        if self.command == "POST" and (match := re.fullmatch(r"/crm/v3/objects/(\w+)/search", path)):
            store = {"contacts": state.contacts, "tasks": state.tasks}[match.group(1)]
            found = [key for key, rec in store.items() if _matches(rec, body["filterGroups"])]
            self._send(200, {"total": len(found), "results": [{"id": key, "properties": {}} for key in found[:1]]})
        elif self.command == "POST" and (match := re.fullmatch(r"/crm/v3/objects/(contacts|notes|tasks)", path)):
            kind = match.group(1)
            store = {"contacts": state.contacts, "notes": state.notes, "tasks": state.tasks}[kind]
            email = body["properties"].get("email")
            if kind == "contacts" and email:
                for key, rec in state.contacts.items():
                    if rec["properties"].get("email") == email:
                        self._send(409, {"status": "error", "category": "CONFLICT",
                                         "message": f"Contact already exists. Existing ID: {key}"})
                        return
            new_id = state.new_id()
            associations = body.get("associations") or []
            contact = associations[0]["to"]["id"] if associations else None
            store[new_id] = {"properties": dict(body["properties"]), "_contact": contact}
            if kind in ("contacts", "tasks"):
                self._delay = state.create_answer_delay
                state.created.set()
            self._send(201, {"id": new_id, "properties": body["properties"]})
        elif self.command == "PATCH" and (match := re.fullmatch(r"/crm/v3/objects/(contacts|tasks)/(\w+)", path)):
            store = state.contacts if match.group(1) == "contacts" else state.tasks
            record = store.get(match.group(2))
            if record is None:
                self._send(404, {"status": "error", "category": "OBJECT_NOT_FOUND"})
                return
            record["properties"].update(body["properties"])
            self._send(200, {"id": match.group(2), "properties": record["properties"]})
        elif self.command == "POST" and re.fullmatch(r"/2010-04-01/Accounts/\w+/Messages.json", path):
            sid = f"SM{state.new_id():0>32}"
            state.sms.append({"sid": sid, **body})
            self._send(201, {"sid": sid, "status": "queued", "to": body["To"], "from": body["From"]})
        elif self.command == "POST" and re.fullmatch(r"/2010-04-01/Accounts/\w+/Calls.json", path):
            # https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource
            sid = f"CA{state.new_id():0>32}"
            state.voice_calls.append({"sid": sid, **body})
            self._send(201, {"sid": sid, "status": "queued", "to": body["To"], "from": body["From"]})
        else:
            self._send(404, {"status": "error", "message": f"fake has no route for {self.command} {path}"})

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()


class FakeProviders(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = ProviderState()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FakeProviders:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

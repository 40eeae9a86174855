"""A loopback stand-in for HubSpot CRM v3 and Twilio's Messages and Calls APIs, for tests whose worker runs in another
process (where `responses` cannot reach) and tests that want the real clients over real HTTP. It keeps what it was
sent, answers in the documented shapes, refuses a HubSpot body its generated models refuse
(tests/fakes/hubspot_models.py), lets search trail writes by `search_lag` seconds as HubSpot's index does, merges
contacts as HubSpot does, and can be told to fail a share of calls.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.hubspot_models import Refused, check_request
from tests.fakes.loopback import LoopbackHandler, LoopbackServer


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
    call_logs: dict[str, dict[str, Any]] = field(default_factory=dict)  # HubSpot calls (engagements)
    # HubSpot records archived (DELETE), by object type: ids.
    archived: dict[str, list[str]] = field(default_factory=dict)
    # Contact ids merged away, each to the id of the record they now resolve to.
    merged: dict[str, str] = field(default_factory=dict)
    sms: list[dict[str, str]] = field(default_factory=list)
    voice_calls: list[dict[str, str]] = field(default_factory=list)  # Twilio Calls created
    calls: list[Recorded] = field(default_factory=list)
    # HubSpot bodies its own models refuse: (method, path, why); a test expects none.
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    # Seconds a new HubSpot record stays out of search results (HubSpot's index trails writes).
    search_lag: float = 0.0
    failure_rate: float = 0.0
    retry_after: str = "1"  # the Retry-After of the 429s that failure_rate answers
    # Seconds to hold the answer to a contact or task creation after storing it (a crash test kills the worker
    # then); `created` is set as soon as one is stored.
    create_answer_delay: float = 0.0
    sms_answer_delay: float = 0.0  # seconds Twilio takes to answer a text it has taken (about 0.2-0.4 s for real)
    created: threading.Event = field(default_factory=threading.Event)
    next_id: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)


def _refusal(method: str, path: str, body: Any) -> str | None:
    try:
        check_request(method, path.split("?", 1)[0], body)
    except Refused as refused:
        return str(refused)
    return None


def _matches(record: dict[str, Any], groups: list[dict[str, Any]]) -> bool:
    for group in groups:
        if all(_filter_ok(record, item) for item in group["filters"]):
            return True
    return False


def _filter_ok(record: dict[str, Any], item: dict[str, Any]) -> bool:
    value = record.get("_contact") if item["propertyName"] == "associations.contact" else (
        record["properties"].get(item["propertyName"]))
    if item["operator"] == "IN":
        return value in item["values"]
    return bool(value == item["value"])


def _record(key: str, record: dict[str, Any], names: list[str] | None, trace: str | None = None) -> dict[str, Any]:
    properties = record["properties"] if names is None else {
        name: record["properties"].get(name) for name in names}
    answer = {"id": key, "properties": properties}
    return answer | ({"objectWriteTraceId": trace} if trace else {})


class _Handler(LoopbackHandler):
    server: FakeProviders
    _answer: tuple[int, Any, dict[str, str] | None]
    _delay: float
    _reset: bool  # close the connection without an answer

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._answer = (status, payload, headers)

    def _write(self, status: int, payload: Any, headers: dict[str, str] | None) -> None:
        data = b"" if status == 204 else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, raw: bytes) -> None:
        if "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            body: Any = {key: values[0] for key, values in parse_qs(raw.decode()).items()}
        else:
            body = json.loads(raw) if raw else None
        state = self.server.state
        self._answer = (500, {}, None)
        self._delay = 0.0
        self._reset = False
        with state.lock:
            state.calls.append(Recorded(self.command, self.path, body))
            if self.path.startswith("/crm/") and (why := _refusal(self.command, self.path, body)):
                state.refused.append((self.command, self.path.split("?", 1)[0], why))
                self._send(400, {"status": "error", "category": "VALIDATION_ERROR", "message": why})
            elif state.failure_rate and random.random() < state.failure_rate:
                if random.random() < 0.5:
                    self._send(429, {"status": "error", "category": "RATE_LIMITS"}, {"Retry-After": state.retry_after})
                else:
                    self._send(502, {"status": "error"})
            else:
                self._route(state, body)
        # Answered outside the lock, so a held answer does not stall other requests.
        time.sleep(self._delay)
        if self._reset:
            self.close_connection = True
            return
        # A caller killed while its answer was held: the write fails, and LoopbackServer.handle_error lets it go.
        self._write(*self._answer)

    def _route(self, state: ProviderState, body: Any) -> None:
        path = self.path.split("?", 1)[0]
        stores = {"contacts": state.contacts, "notes": state.notes, "tasks": state.tasks, "calls": state.call_logs}
        if self.command == "POST" and (match := re.fullmatch(r"/crm/v3/objects/(\w+)/search", path)):
            store = stores[match.group(1)]
            indexed = time.time() - state.search_lag
            found = [key for key, rec in store.items()
                     if rec["_at"] <= indexed and _matches(rec, body["filterGroups"])]
            names = [name for name in body.get("properties", []) if name != "hs_object_id"]
            results = [_record(key, store[key], names) for key in found[: body.get("limit", 10)]]
            self._send(200, {"total": len(found), "results": results})
        elif self.command == "POST" and path == "/crm/v3/objects/contacts/merge":
            self._merge(state, stores, body)
        elif self.command == "GET" and (match := re.fullmatch(r"/crm/v3/objects/(contacts|notes|tasks|calls)/(\w+)",
                                                               path)):
            self._read(stores[match.group(1)], state.merged if match.group(1) == "contacts" else {}, match.group(2))
        elif self.command == "DELETE" and (match := re.fullmatch(
                r"/crm/v3/objects/(contacts|notes|tasks|calls)/(\w+)", path)):
            if stores[match.group(1)].pop(match.group(2), None) is None:
                self._send(404, {"status": "error", "category": "OBJECT_NOT_FOUND"})
                return
            state.archived.setdefault(match.group(1), []).append(match.group(2))
            self._send(204, None)
        elif self.command == "POST" and (match := re.fullmatch(r"/crm/v3/objects/(\w+)/batch/(\w+)", path)):
            self._batch(state, stores[match.group(1)], match.group(1), match.group(2), body)
        elif self.command == "POST" and (match := re.fullmatch(r"/crm/v3/objects/(contacts|notes|tasks|calls)", path)):
            new_id = self._create(state, stores, match.group(1), body)
            if new_id is not None:
                self._send(201, {"id": new_id, "properties": body["properties"]})
        elif self.command == "PATCH" and (match := re.fullmatch(r"/crm/v3/objects/(contacts|tasks)/(\w+)", path)):
            store = state.contacts if match.group(1) == "contacts" else state.tasks
            record = store.get(match.group(2))
            if record is None:
                self._send(404, {"status": "error", "category": "OBJECT_NOT_FOUND"})
                return
            record["properties"].update(body["properties"])
            self._send(200, {"id": match.group(2), "properties": record["properties"]})
        elif self.command == "GET" and re.fullmatch(r"/2010-04-01/Accounts/\w+/Messages.json", path):
            # https://www.twilio.com/docs/messaging/api/message-resource#read-multiple-message-resources
            query = {key: values[0] for key, values in parse_qs(self.path.partition("?")[2]).items()}
            size = int(query.get("PageSize", 50))
            found = [sms for sms in reversed(state.sms)
                     if sms["To"] == query.get("To", sms["To"]) and sms["From"] == query.get("From", sms["From"])]
            messages = [{"sid": sms["sid"], "to": sms["To"], "from": sms["From"], "body": sms["Body"],
                         "status": "sent", "date_created": sms["date_created"]} for sms in found[:size]]
            self._send(200, {"messages": messages, "page": 0, "page_size": size, "next_page_uri": None,
                             "uri": path, "first_page_uri": path, "previous_page_uri": None})
        elif self.command == "GET" and re.fullmatch(r"/2010-04-01/Accounts/\w+/Calls.json", path):
            # https://www.twilio.com/docs/voice/api/call-resource#read-multiple-call-resources
            query = {key: values[0] for key, values in parse_qs(self.path.partition("?")[2]).items()}
            size = int(query.get("PageSize", 50))
            placed = [call for call in reversed(state.voice_calls)
                      if call["To"] == query.get("To", call["To"]) and call["From"] == query.get("From", call["From"])]
            listed = [{"sid": call["sid"], "to": call["To"], "from": call["From"], "status": "completed",
                       "date_created": call["date_created"]} for call in placed[:size]]
            self._send(200, {"calls": listed, "page": 0, "page_size": size, "next_page_uri": None,
                             "uri": path, "first_page_uri": path, "previous_page_uri": None})
        elif self.command == "POST" and re.fullmatch(r"/2010-04-01/Accounts/\w+/Messages.json", path):
            sid = f"SM{state.new_id():0>32}"
            state.sms.append({"sid": sid, **body, "date_created": formatdate(usegmt=True)})
            self._delay = state.sms_answer_delay
            self._send(201, {"sid": sid, "status": "queued", "to": body["To"], "from": body["From"]})
        elif self.command == "POST" and re.fullmatch(r"/2010-04-01/Accounts/\w+/Calls.json", path):
            # https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource
            sid = f"CA{state.new_id():0>32}"
            state.voice_calls.append({"sid": sid, **body, "date_created": formatdate(usegmt=True)})
            self._send(201, {"sid": sid, "status": "queued", "to": body["To"], "from": body["From"]})
        else:
            self._send(404, {"status": "error", "message": f"fake has no route for {self.command} {path}"})

    def _read(self, store: dict[str, dict[str, Any]], merged: dict[str, str], key: str) -> None:
        """GET one record; a contact id merged away reads the record it was merged into, under that record's id."""
        key = merged.get(key, key)
        if key not in store:
            self._send(404, {"status": "error", "category": "OBJECT_NOT_FOUND"})
            return
        query = parse_qs(self.path.partition("?")[2])
        names = [name for value in query.get("properties", []) for name in value.split(",") if name != "hs_object_id"]
        self._send(200, _record(key, store[key], names if "properties" in query else None))

    def _merge(self, state: ProviderState, stores: dict[str, dict[str, Any]], body: Any) -> None:
        """POST /crm/v3/objects/contacts/merge, as HubSpot's developer changelog ("Updated merge functionality for
        contacts and companies") describes it: the merged record gets a new id, both old ids resolve to it from
        then on, the two records' activities are associated with it, and the primary's values win. Merging two ids
        that resolve to one record already is refused (400)."""
        primary, other = (state.merged.get(body[key], body[key]) for key in ("primaryObjectId", "objectIdToMerge"))
        if primary not in state.contacts or other not in state.contacts:
            self._send(404, {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "contact not found"})
            return
        if primary == other:
            self._send(400, {"status": "error", "category": "VALIDATION_ERROR",
                             "message": "Cannot merge a contact into itself"})
            return
        first, second = state.contacts.pop(primary), state.contacts.pop(other)
        properties = {name: value for name, value in second["properties"].items() if value} | {
            name: value for name, value in first["properties"].items() if value}
        new_id = state.new_id()
        state.contacts[new_id] = {"properties": properties, "_contact": None, "_at": time.time()}
        for old, current in list(state.merged.items()):
            if current in (primary, other):
                state.merged[old] = new_id
        state.merged[primary] = state.merged[other] = new_id
        for store in (state.notes, state.tasks, state.call_logs):
            for record in store.values():
                if record["_contact"] in (primary, other):
                    record["_contact"] = new_id
        self._send(200, {"id": new_id, "properties": properties, "archived": False})

    def _create(self, state: ProviderState, stores: dict[str, dict[str, Any]], kind: str, item: Any) -> str | None:
        """Store a new record; a contact whose email another contact has gets a 409 (answered here) and None."""
        email = item["properties"].get("email")
        taken = [key for key, rec in state.contacts.items() if email and rec["properties"].get("email") == email]
        if kind == "contacts" and taken:
            self._send(409, {"status": "error", "category": "CONFLICT",
                             "message": f"Contact already exists. Existing ID: {taken[0]}"})
            return None
        new_id = state.new_id()
        associations = item.get("associations") or []
        contact = associations[0]["to"]["id"] if associations else None
        stores[kind][new_id] = {"properties": dict(item["properties"]), "_contact": contact, "_at": time.time()}
        if kind in ("contacts", "tasks"):
            self._delay = state.create_answer_delay
            state.created.set()
        return new_id

    def _batch(self, state: ProviderState, store: dict[str, dict[str, Any]], kind: str, action: str,
               body: Any) -> None:
        """Batch create, update, upsert (by a unique property) and read (by id or a unique property), answering
        207 with `errors` for the inputs it could not do, as HubSpot does."""
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in body["inputs"]:
            trace = item.get("objectWriteTraceId")
            unique = item.get("idProperty") or body.get("idProperty")
            if unique:
                key = next((k for k, rec in store.items() if rec["properties"].get(unique) == item["id"]), None)
            else:
                key = item.get("id")
            if action == "read":
                if key in store:
                    results.append(_record(key, store[key], body.get("properties")))
                else:
                    errors.append({"status": "error", "category": "OBJECT_NOT_FOUND", "message": "not found"})
            elif action == "update" or (action == "upsert" and key in store):
                if key not in store:
                    errors.append({"status": "error", "category": "OBJECT_NOT_FOUND", "message": "not found"})
                    continue
                store[key]["properties"].update(item["properties"])
                results.append(_record(key, store[key], None, trace) | {"new": False})
            else:
                new_id = self._create(state, {kind: store}, kind, item)
                if new_id is None:
                    return
                results.append(_record(new_id, store[new_id], None, trace) | {"new": True})
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            answer |= {"errors": errors, "numErrors": len(errors)}
        self._send(207 if errors else (201 if action == "create" else 200), answer)


class FakeProviders(LoopbackServer):
    def __init__(self) -> None:
        super().__init__(_Handler)
        self.state = ProviderState()

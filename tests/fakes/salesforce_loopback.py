"""A loopback stand-in for the part of Salesforce's REST API the CRM client calls (integrations/salesforce/): Leads
upserted by an External ID field and updated by id, Tasks upserted by theirs, updated and deleted by id, and the
SOQL query a merge runs. Records are kept in memory for tests to inspect; answers are in the documented shapes
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm, errorcodes.htm), and a
save Salesforce would refuse (a required Lead field missing on create, a WhoId that is no Lead) is refused.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from integrations.salesforce.auth import AccessToken
from tests.fakes.loopback import LoopbackHandler, LoopbackServer
from tests.fakes.providers import Recorded

TOKEN = "00Dfake!loopback-token"
_SOBJECT = re.compile(r"/services/data/v\d+\.0/sobjects/(Lead|Task)/([^/]+)(?:/([^/]+))?")
_QUERY = re.compile(r"SELECT Id FROM Task WHERE WhoId = '(\w+)' LIMIT (\d+)")
_PREFIX = {"Lead": "00Q", "Task": "00T"}  # the key prefixes of Lead and Task ids
_REQUIRED = {"Lead": ("LastName", "Company"), "Task": ()}


@dataclass
class SalesforceState:
    leads: dict[str, dict[str, Any]] = field(default_factory=dict)  # by Id: the Lead's fields
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted_tasks: list[str] = field(default_factory=list)
    calls: list[Recorded] = field(default_factory=list)
    # "METHOD /path" patterns: the next request matching one is done, then its connection closed unanswered.
    lose_answers: list[str] = field(default_factory=list)
    next_id: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_id(self, sobject: str) -> str:
        self.next_id += 1
        return f"{_PREFIX[sobject]}{self.next_id:015d}"  # 18 characters, as the API answers

    def tasks_on(self, lead_id: str) -> dict[str, dict[str, Any]]:
        return {key: task for key, task in self.tasks.items() if task.get("WhoId") == lead_id}


def _error(code: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
    return [{"errorCode": code, "message": code.replace("_", " ").lower(), "fields": fields or []}]


class _Handler(LoopbackHandler):
    server: FakeSalesforce

    def _handle(self, raw: bytes) -> None:
        body = json.loads(raw) if raw else None
        state = self.server.state
        with state.lock:
            state.calls.append(Recorded(self.command, self.path, body))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, payload = 401, _error("INVALID_SESSION_ID")
            else:
                status, payload = self._route(state, body)
            request = f"{self.command} {self.path.split('?', 1)[0]}"
            lost = next((pattern for pattern in state.lose_answers if re.fullmatch(pattern, request)), None)
            if lost is not None:
                state.lose_answers.remove(lost)
                self.close_connection = True
                return
        data = b"" if status == 204 else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, state: SalesforceState, body: Any) -> tuple[int, Any]:
        path, _, query = self.path.partition("?")
        if self.command == "GET" and re.fullmatch(r"/services/data/v\d+\.0/query", path):
            return self._query(state, parse_qs(query).get("q", [""])[0])
        match = _SOBJECT.fullmatch(path)
        if match is None:
            return 404, _error("NOT_FOUND")
        sobject, first, second = match.group(1), unquote(match.group(2)), match.group(3)
        store = state.leads if sobject == "Lead" else state.tasks
        if second is not None:
            key = next((k for k, rec in store.items() if rec.get(first) == unquote(second)), None)
            if self.command == "GET":
                return (200, {"attributes": {"type": sobject}, "Id": key}) if key else (404, _error("NOT_FOUND"))
            if self.command == "PATCH":
                return self._upsert(state, sobject, store, key, {first: unquote(second)}, body)
        elif self.command == "PATCH":
            if first not in store:
                return 404, _error("ENTITY_IS_DELETED" if first in state.deleted_tasks else "NOT_FOUND")
            if (refused := self._refusal(state, body)) is not None:
                return refused
            store[first].update(body)
            return 204, None
        elif self.command == "DELETE" and sobject == "Task":
            if state.tasks.pop(first, None) is None:
                return 404, _error("ENTITY_IS_DELETED" if first in state.deleted_tasks else "NOT_FOUND")
            state.deleted_tasks.append(first)
            return 204, None
        return 405, _error("METHOD_NOT_ALLOWED")

    def _upsert(self, state: SalesforceState, sobject: str, store: dict[str, dict[str, Any]], key: str | None,
                external: dict[str, str], body: Any) -> tuple[int, Any]:
        """Upsert by External ID: 200 `created: false` for the record that has the value, else 201 with a new
        record, which must have the object's required fields. The External ID field may not be in the body."""
        if set(external) & set(body):
            return 400, _error("INVALID_FIELD", list(external))
        if (refused := self._refusal(state, body)) is not None:
            return refused
        if key is not None:
            store[key].update(body)
            return 200, {"id": key, "success": True, "errors": [], "created": False}
        if missing := [name for name in _REQUIRED[sobject] if not body.get(name)]:
            return 400, _error("REQUIRED_FIELD_MISSING", missing)
        key = state.new_id(sobject)
        store[key] = {**body, **external}
        return 201, {"id": key, "success": True, "errors": [], "created": True}

    def _refusal(self, state: SalesforceState, body: Any) -> tuple[int, Any] | None:
        """A Task's WhoId must name a Lead there is."""
        who = body.get("WhoId")
        if who is not None and who not in state.leads:
            return 400, _error("INVALID_CROSS_REFERENCE_KEY", ["WhoId"])
        return None

    def _query(self, state: SalesforceState, soql: str) -> tuple[int, Any]:
        """Only the query the client runs: a Lead's Tasks."""
        match = _QUERY.fullmatch(soql)
        if match is None:
            return 400, _error("MALFORMED_QUERY")
        found = list(state.tasks_on(match.group(1)))[: int(match.group(2))]
        records = [{"attributes": {"type": "Task"}, "Id": key} for key in found]
        return 200, {"totalSize": len(records), "done": True, "records": records}


class FakeSalesforce(LoopbackServer):
    def __init__(self) -> None:
        super().__init__(_Handler)
        self.state = SalesforceState()


class LoopbackToken:
    """A `TokenProvider` for the fake: its token and its loopback instance URL (the OAuth flows insist on https)."""

    auth_hint = "the loopback fake takes only its own token"

    def __init__(self, fake: FakeSalesforce) -> None:
        self._fake = fake

    def token(self) -> AccessToken:
        return AccessToken(TOKEN, self._fake.url)

    def refresh(self) -> AccessToken:
        return self.token()

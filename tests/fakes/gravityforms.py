"""A loopback stand-in for a WordPress site's Gravity Forms REST API v2 (read-only), for tests whose poller runs in
another process. It serves the entries the test has "submitted" on the site, whatever became of their webhooks.

Shapes: https://docs.gravityforms.com/searching-and-getting-entries-with-the-rest-api-v2/ (entries, paging,
sorting) and https://docs.gravityforms.com/getting-forms-with-the-rest-api-v2/ (the form object).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from integrations.gravityforms.client import PAGE_SIZE, EntriesPage, GravityFormsClient
from tests.fakes.loopback import LoopbackServer

CONSUMER_KEY = "ck_test_fault_injection"
CONSUMER_SECRET = "cs_test_fault_injection"


class _Handler(BaseHTTPRequestHandler):
    server: FakeGravityForms

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _write(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        expected = base64.b64encode(f"{CONSUMER_KEY}:{CONSUMER_SECRET}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            self._write(401, {"code": "rest_forbidden", "message": "Sorry, you are not allowed to do that."})
            return
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        site = self.server
        with site.lock:
            site.requests += 1
        if match := re.fullmatch(r"/wp-json/gf/v2/forms/(\d+)/entries", url.path):
            self._write(200, site.entries_page(match.group(1), query))
        elif (match := re.fullmatch(r"/wp-json/gf/v2/forms/(\d+)", url.path)) and match.group(1) in site.forms:
            self._write(200, site.forms[match.group(1)])
        else:
            self._write(404, {"code": "not_found", "message": "Not found"})


class FakeGravityForms(LoopbackServer):
    """`add()` an entry as WordPress stores it on submission; GET /wp-json/gf/v2/forms/{id}/entries then lists it,
    sorted by `date_created` and paged as the query asks."""

    def __init__(self, forms: list[dict[str, Any]]) -> None:
        super().__init__(_Handler)
        self.forms = {str(form["id"]): form for form in forms}
        self.entries: list[dict[str, Any]] = []
        self.requests = 0
        self.lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.entries.append(entry)

    def entries_page(self, form_id: str, query: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            entries = [entry for entry in self.entries
                       if entry["form_id"] == form_id and entry.get("status", "active") == "active"]
        # Entry ids break ties between entries created in the same second, as Gravity Forms' own query does.
        newest_first = query.get("sorting[direction]", "DESC").upper() == "DESC"
        entries.sort(key=lambda entry: (entry["date_created"], int(entry["id"])), reverse=newest_first)
        size = int(query.get("paging[page_size]", "20"))
        page = int(query.get("paging[current_page]", "1"))
        return {"total_count": len(entries), "entries": entries[(page - 1) * size:page * size]}


class InMemoryGravityForms(GravityFormsClient):
    """The REST API answering from memory, in pages as the site would, for code that takes the client itself
    (a backfill, in-process): the site's entries are `entries`, oldest first."""

    def __init__(self, form: dict[str, Any], entries: list[dict[str, Any]]) -> None:
        super().__init__("https://clinic.example.org", "ck_in_memory", "cs_in_memory")
        self.form, self.entries = form, entries

    def get_form(self, form_id: str) -> dict[str, Any]:
        return self.form

    def entries_page(self, form_id: str, *, page: int, newest_first: bool,
                     since: datetime | None = None) -> EntriesPage:
        chunk = self.entries[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
        return EntriesPage(total_count=len(self.entries), entries=chunk)

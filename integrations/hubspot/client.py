"""HubSpot CRM v3 behind our `CRM` protocol, authenticated with a private-app token.

Contacts are matched by email, else by phone; notes and the callback task hang off the contact. Error messages
name the call and HubSpot's error category, never a request or response body (both hold PHI).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import requests
from pydantic import BaseModel, ValidationError

from integrations.crm import BatchResult, CallbackTaskSpec, CallRecord, ContactCard, NoteRoom, NoteSpec, look_failed
from integrations.errors import Conflict, IntegrationError, InvalidRequest, RateLimited, ServiceUnavailable
from integrations.hubspot.corrections import HubSpotCorrections
from integrations.hubspot.models import BatchAnswer, BatchPage, BatchRecord, CrmObject, ErrorBody, SearchPage
from integrations.ratelimit import SharedRateLimit, Store, Window

# HUBSPOT_DEFINED association type ids, https://developers.hubspot.com/docs/api/crm/associations
NOTE_TO_CONTACT = 202
TASK_TO_CONTACT = 204
CALL_TO_CONTACT = 194
OWNER_PROPERTY = "hubspot_owner_id"
# Contact properties the center creates in HubSpot for HUBSPOT_CUSTOM_PROPERTIES; the lead reference is a
# unique-value property, so a contact upserted by it is created once however often the push is repeated.
LEAD_REF_PROPERTY = "admitflow_lead_ref"
CUSTOM_PROPERTIES = (LEAD_REF_PROPERTY, "admitflow_source_form", "admitflow_repeat_count", "admitflow_consent")
# Where the person came from (HUBSPOT_ATTRIBUTION_PROPERTIES): single-line text contact properties the center
# creates; HubSpot's own hs_analytics_* source properties are read-only.
ATTRIBUTION_PROPERTIES = {
    key: f"admitflow_{key}" for key in (
        "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "gclid", "fbclid", "msclkid",
        "referrer", "landing_page", "form_page",
    )
}
# A string property value holds at most 65,536 characters; a note's body is stored as HTML.
# https://knowledge.hubspot.com/properties/property-field-types-in-hubspot
NOTE_ROOM_CHARS = 65_536

# Set only when we create the contact: on an existing one they would overwrite what admissions already set.
_NEW_LEAD = {"hs_lead_status": "NEW", "lifecyclestage": "lead"}
_CATEGORY = re.compile(r"[A-Z][A-Z0-9_]{0,63}")

# Batch endpoints take at most 100 inputs; a search answers at most 100 records per page here, and up to five
# filter groups. https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/objects/batch/create-objects
BATCH_LIMIT = 100
SEARCH_GROUPS = 5

# Search trails writes: "it may take a few moments for newly created or updated objects to appear in search
# results" (https://developers.hubspot.com/docs/api/crm/search). A create whose answer was lost is looked for by
# search only after this many seconds (HUBSPOT_SEARCH_LAG_SECONDS).
DEFAULT_SEARCH_LAG_SECONDS = 10.0

# A 429 without Retry-After: sit out one burst window.
# https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines
DEFAULT_PAUSE_SECONDS = 10.0

Answer = TypeVar("Answer", bound=BaseModel)


class HubSpotCRM(HubSpotCorrections):
    """The `CRM` the worker uses when HUBSPOT_TOKEN is set."""

    name = "HubSpot"
    service = "HubSpot"
    auth_hint = (
        "create a private-app token with the crm.objects.contacts.read and crm.objects.contacts.write scopes "
        "and set HUBSPOT_TOKEN"
    )

    def __init__(
        self,
        token: str,
        *,
        base_url: str = "https://api.hubapi.com",
        timeout: float = 10.0,
        session: requests.Session | None = None,
        rate_limit: SharedRateLimit | None = None,
        custom_properties: bool = False,
        attribution_properties: bool = False,
        batch_size: int = BATCH_LIMIT,
        search_lag_seconds: float = DEFAULT_SEARCH_LAG_SECONDS,
    ) -> None:
        if not token:
            raise ValueError("HubSpotCRM needs a private-app token: set HUBSPOT_TOKEN")
        super().__init__(base_url, timeout=timeout, session=session)
        self._token = token
        self._rate_limit = rate_limit
        self._custom_properties = custom_properties
        self._attribution_properties = attribution_properties
        self._batch_size = max(0, min(batch_size, BATCH_LIMIT))
        self.note_room = NoteRoom(NOTE_ROOM_CHARS, lambda text: len(_as_html(text)))
        self._search_lag = search_lag_seconds

    @property
    def batch_size(self) -> int:
        """Leads per batch call. Batches need the lead reference property: it is what makes a contact upsert that
        went through unanswered safe to send again."""
        return self._batch_size if self._custom_properties else 0

    def lookup_lag_seconds(self, step: str) -> float:
        """Contacts upserted by the unique lead reference property need no wait; anything found by search does."""
        return 0.0 if step == "contact" and self._custom_properties else self._search_lag

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        # Sent per request rather than set on the session, which a caller may share with other services.
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        headers.update(kwargs.pop("headers", None) or {})
        if self._rate_limit is None:
            return super().request(method, path, headers=headers, **kwargs)
        self._rate_limit.wait_for_slot(*(("request", "search") if path.endswith("/search") else ("request",)))
        try:
            return super().request(method, path, headers=headers, **kwargs)
        except RateLimited as limited:
            self._rate_limit.pause(limited.retry_after or DEFAULT_PAUSE_SECONDS)
            raise

    def upsert_contact(self, card: ContactCard, contact_id: str | None) -> str:
        """Update the known contact, else the one with the card's email (else phone), else create one.

        https://developers.hubspot.com/docs/api/crm/contacts (create: POST /crm/v3/objects/contacts;
        update: PATCH /crm/v3/objects/contacts/{contactId})
        """
        properties = _contact_properties(card) | (_custom_properties(card) if self._custom_properties else {})
        if contact_id is None and card.match_existing:
            contact_id = self._find_contact(card)
        if contact_id is not None:
            self._update_contact(contact_id, properties)
            return contact_id
        new = {**properties, **self._first_touch(card)}
        try:
            if self._custom_properties:
                return self._upsert_by_lead_ref(card.lead_ref, new)
            return self._create("contacts", {"properties": new})
        except Conflict as conflict:
            # Search lags writes by a few seconds, so it can miss a contact that has this email; HubSpot's 409
            # then names the existing contact's id.
            if conflict.existing_id is None:
                raise
            self._update_contact(conflict.existing_id, properties)
            return conflict.existing_id

    def add_note(self, contact_id: str, text: str, at: datetime, *, look_first: bool = False) -> str:
        """Attach `text` as a note on the contact's timeline; with `look_first`, return the note on the contact
        that carries `text`'s first line if there is one.

        https://developers.hubspot.com/docs/api/crm/notes (POST /crm/v3/objects/notes)
        """
        if look_first:
            note = NoteSpec("note", contact_id, text, at, text.split("\n", 1)[0])
            if (existing := self._find_notes([note]).get("note")) is not None:
                return existing
        return self._create("notes", _note_input(contact_id, text, at))

    def ensure_callback_task(self, contact_id: str, task: CallbackTaskSpec) -> str:
        """Return the contact's task with `task.subject`, creating it (a high-priority call) if there is none.

        The search index trails writes by a few seconds, so only a retry inside that window could still add a
        second task; the worker records the returned id at once, which keeps that window to a crash.
        https://developers.hubspot.com/docs/api/crm/tasks (POST /crm/v3/objects/tasks)
        """
        existing = self._search(
            "tasks", [_filter_group(("hs_task_subject", task.subject), ("associations.contact", contact_id))]
        )
        if existing is not None:
            return existing
        return self._create("tasks", _task_input(contact_id, task))

    def assign_callback_task(self, task_id: str, owner_id: str) -> None:
        """Give the task to `owner_id`, the HubSpot owner of the staff member who claimed the lead.

        https://developers.hubspot.com/docs/api/crm/tasks (PATCH /crm/v3/objects/tasks/{taskId})
        """
        path = f"/crm/v3/objects/tasks/{quote(task_id, safe='')}"
        self.request("PATCH", path, json={"properties": {OWNER_PROPERTY: owner_id}})

    def log_call(self, contact_id: str, call: CallRecord, *, look_first: bool = False) -> str:
        """Log the bridged call on the contact's timeline; with `look_first`, return the contact's call titled for
        the lead if there is one (found by search, then read back by id).

        https://developers.hubspot.com/docs/api/crm/calls (POST /crm/v3/objects/calls; hs_call_duration is in
        milliseconds; 194 = call to contact)
        """
        title = f"Callback {call.lead_ref}"
        if look_first:
            group = _filter_group(("hs_call_title", title), ("associations.contact", contact_id))
            records = self._search_all("calls", [group], ["hs_call_title"])
            found = {title: records[0].id} if records else {}
            if (existing := self._read_back("calls", found, "hs_call_title").get(title)) is not None:
                return existing
        properties = {
            "hs_timestamp": _timestamp(call.started_at),
            "hs_call_title": title,
            "hs_call_direction": "OUTBOUND",
            "hs_call_status": "COMPLETED",
            "hs_call_body": f"Bridged by admitflow from the center's number (lead {call.lead_ref}).",
        }
        if call.duration_seconds is not None:
            properties["hs_call_duration"] = str(call.duration_seconds * 1000)
        if call.owner_id:
            properties[OWNER_PROPERTY] = call.owner_id
        return self._create(
            "calls", {"properties": properties, "associations": [_association(contact_id, CALL_TO_CONTACT)]}
        )

    def complete_callback_task(self, task_id: str) -> None:
        """https://developers.hubspot.com/docs/api/crm/tasks (PATCH /crm/v3/objects/tasks/{taskId})"""
        path = f"/crm/v3/objects/tasks/{quote(task_id, safe='')}"
        self.request("PATCH", path, json={"properties": {"hs_task_status": "COMPLETED"}})

    def upsert_contacts(self, contacts: Sequence[tuple[ContactCard, str | None]]) -> BatchResult:
        """`upsert_contact` for many leads in a few calls: known contacts and the ones found by email (batch read)
        or phone (one search) are updated in one batch; the rest are upserted by lead reference in another.
        Results are keyed by lead reference. A look or a write that fails is the error of its leads alone and the
        others go on; a contact found but not written comes back in `found`."""
        result = BatchResult()
        found = self._find_contacts([card for card, known in contacts if known is None and card.match_existing],
                                    result.errors)
        result.found = dict(found)
        updates: list[tuple[str, str, dict[str, str]]] = []
        creates: list[tuple[str, dict[str, str]]] = []
        for card, contact_id in contacts:
            if card.lead_ref in result.errors:
                continue
            properties = _contact_properties(card) | _custom_properties(card)
            if (known := found.get(card.lead_ref) if contact_id is None else contact_id) is not None:
                updates.append((card.lead_ref, known, properties))
            else:
                creates.append((card.lead_ref, {**properties, **self._first_touch(card)}))
        if updates:
            self._update_contacts(updates, result)
        for chunk in _chunks(creates, BATCH_LIMIT):
            inputs = [{"id": ref, "idProperty": LEAD_REF_PROPERTY, "properties": properties,
                       "objectWriteTraceId": ref} for ref, properties in chunk]
            with _kept(result, [ref for ref, _ in chunk]):
                page = self._batch("contacts", "upsert", inputs)
                _collect(page, [ref for ref, _ in chunk], lambda record: record.properties.get(LEAD_REF_PROPERTY),
                         result)
        for ref in result.ids:
            result.found.pop(ref, None)
        return result

    def add_notes(self, notes: Sequence[NoteSpec], *, look_first: Collection[str] = ()) -> BatchResult:
        """`add_note` for many requests in one call per hundred (POST /crm/v3/objects/notes/batch/create). A note
        keyed in `look_first` is first looked for on its contact, by its marker; a look that fails leaves its notes
        out (`LookupFailed`) and the others go on, so what was learnt is kept."""
        result = BatchResult()
        doubtful = [note for note in notes if note.key in look_first]
        result.ids.update(self._find_notes(doubtful, result.errors))
        result.absent = {note.key for note in doubtful} - set(result.ids) - set(result.errors)
        pending = [note for note in notes if note.key not in result.ids and note.key not in result.errors]
        markers = {html.escape(note.marker): note.key for note in pending}
        for chunk in _chunks(pending, BATCH_LIMIT):
            inputs = [_note_input(note.contact_id, note.text, note.at) | {"objectWriteTraceId": note.key}
                      for note in chunk]
            with _kept(result, [note.key for note in chunk]):
                page = self._batch("notes", "create", inputs)
                _collect(page, [note.key for note in chunk],
                         lambda record: _marked(record.properties.get("hs_note_body"), markers), result)
        return result

    def ensure_callback_tasks(
        self, tasks: Sequence[tuple[str, CallbackTaskSpec]], *, look_first: Collection[str] = ()
    ) -> BatchResult:
        """`ensure_callback_task` for many leads (POST /crm/v3/objects/tasks/batch/create), keyed by lead
        reference. Only the tasks of leads in `look_first` are searched for (one search per hundred); a search that
        fails leaves those tasks out (`LookupFailed`) and the others go on."""
        result = BatchResult()
        by_subject = {task.subject: task.lead_ref for _, task in tasks}
        doubtful = [task.subject for _, task in tasks if task.lead_ref in look_first]
        try:
            for subject, task_id in self._find_tasks(doubtful).items():
                result.ids[by_subject[subject]] = task_id
        except IntegrationError as exc:
            if not doubtful or len(doubtful) == len(tasks):
                raise
            result.errors.update((by_subject[subject], look_failed(exc)) for subject in doubtful)
        result.absent = {by_subject[subject] for subject in doubtful} - set(result.ids) - set(result.errors)
        pending = [(contact_id, task) for contact_id, task in tasks
                   if task.lead_ref not in result.ids and task.lead_ref not in result.errors]
        for chunk in _chunks(pending, BATCH_LIMIT):
            inputs = [_task_input(contact_id, task) | {"objectWriteTraceId": task.lead_ref}
                      for contact_id, task in chunk]
            with _kept(result, [task.lead_ref for _, task in chunk]):
                page = self._batch("tasks", "create", inputs)
                _collect(page, [task.lead_ref for _, task in chunk],
                         lambda record: by_subject.get(record.properties.get("hs_task_subject") or ""), result)
        return result

    def _first_touch(self, card: ContactCard) -> dict[str, str]:
        """What only a new contact gets: the lead status, and where the person first came from (on an existing
        contact it would overwrite the source that brought them first; each request's source is in its note)."""
        if not self._attribution_properties:
            return dict(_NEW_LEAD)
        return {**_NEW_LEAD, **{ATTRIBUTION_PROPERTIES[key]: value[:1000] for key, value in card.attribution.items()
                                if key in ATTRIBUTION_PROPERTIES and value}}

    def describe_error(self, response: requests.Response) -> str:
        """HubSpot's error `category` (VALIDATION_ERROR, CONFLICT...); its `message` may echo PHI."""
        category = _error_body(response).category or ""
        return category if _CATEGORY.fullmatch(category) else ""

    def raise_for_response(self, response: requests.Response) -> None:
        status = response.status_code
        if status in (400, 409):
            error = _error_body(response)
            where = _where(response)
            detail = self.describe_error(response) or "no category"
            if status == 409:
                message = f"HubSpot already has this record (409 on {where}, {detail})"
                raise Conflict(message, existing_id=error.existing_id())
            missing = sorted(set(CUSTOM_PROPERTIES) & error.rejected_properties())
            if error.category == "VALIDATION_ERROR" and missing:
                raise InvalidRequest(
                    f"HubSpot has no contact property {', '.join(missing)} (400 on {where}, {detail}): create the "
                    f"admitflow contact properties ({LEAD_REF_PROPERTY} as a unique-value single-line text) or set "
                    "HUBSPOT_CUSTOM_PROPERTIES=false"
                )
            missing = sorted(set(ATTRIBUTION_PROPERTIES.values()) & error.rejected_properties())
            if error.category == "VALIDATION_ERROR" and missing:
                raise InvalidRequest(
                    f"HubSpot has no contact property {', '.join(missing)} (400 on {where}, {detail}): create the "
                    "admitflow attribution contact properties (single-line text, docs/configuration.md) or set "
                    "HUBSPOT_ATTRIBUTION_PROPERTIES=false"
                )
            if error.category == "VALIDATION_ERROR" and OWNER_PROPERTY in error.rejected_properties():
                raise InvalidRequest(
                    f"HubSpot rejected {OWNER_PROPERTY} (400 on {where}, {detail}): an owner id in the "
                    "roster is not a HubSpot owner; fix owner ids in ROSTER_FILE "
                    "(GET /crm/v3/owners lists the valid ones)"
                )
        super().raise_for_response(response)

    def _find_contact(self, card: ContactCard) -> str | None:
        if card.email:
            return self._search("contacts", [_filter_group(("email", card.email))])
        if card.phone:
            # Filter groups are ORed: a match on either phone property will do.
            groups = [_filter_group(("phone", card.phone)), _filter_group(("mobilephone", card.phone))]
            return self._search("contacts", groups)
        return None

    def _find_contacts(self, cards: Sequence[ContactCard], failed: dict[str, IntegrationError]) -> dict[str, str]:
        """Existing contacts for many cards, keyed by lead reference: by email through a batch read (email is
        unique in HubSpot), by phone through one search per hundred phones. A read or search that fails is the
        error of its cards (in `failed`); the others go on."""
        found: dict[str, str] = {}
        by_email = {card.email.lower(): card.lead_ref for card in cards if card.email}
        for emails in _chunks(list(by_email), BATCH_LIMIT):
            body = {"idProperty": "email", "properties": ["email"], "inputs": [{"id": email} for email in emails]}
            try:
                page = self._batch_call("POST", "/crm/v3/objects/contacts/batch/read", body)
            except IntegrationError as exc:
                failed.update((by_email[email], exc) for email in emails)
                continue
            for record in page.results:
                ref = by_email.get((record.properties.get("email") or "").lower())
                if ref is not None:
                    found.setdefault(ref, record.id)
        by_phone = {card.phone: card.lead_ref for card in cards if not card.email and card.phone}
        for phones in _chunks(list(by_phone), BATCH_LIMIT):
            groups = [{"filters": [{"propertyName": name, "operator": "IN", "values": phones}]}
                      for name in ("phone", "mobilephone")]
            try:
                records = self._search_all("contacts", groups, ["phone", "mobilephone"])
            except IntegrationError as exc:
                failed.update((by_phone[phone], exc) for phone in phones)
                continue
            for record in records:
                for name in ("phone", "mobilephone"):
                    ref = by_phone.get(record.properties.get(name) or "")
                    if ref is not None:
                        found.setdefault(ref, record.id)
        return found

    def _find_notes(self, notes: Sequence[NoteSpec],
                    failed: dict[str, IntegrationError] | None = None) -> dict[str, str]:
        """Notes already on the contacts, by the marker in their body; five contacts per search, then read back by
        id. With `failed`, a search or read that fails is recorded there (`LookupFailed`) for its notes instead of
        raised, and the other searches go on."""
        found: dict[str, str] = {}
        for chunk in _chunks(list(notes), SEARCH_GROUPS):
            markers = {html.escape(note.marker): note.key for note in chunk}
            groups = [_filter_group(("associations.contact", note.contact_id)) for note in chunk]
            try:
                records = self._search_all("notes", groups, ["hs_note_body"])
            except IntegrationError as exc:
                if failed is None:
                    raise
                failed.update((note.key, look_failed(exc)) for note in chunk)
                continue
            for record in records:
                key = _marked(record.properties.get("hs_note_body"), markers)
                if key is not None:
                    found.setdefault(key, record.id)
        markers = {html.escape(note.marker): note.key for note in notes}
        try:
            return self._read_back("notes", found, "hs_note_body", lambda key, body: _marked(body, markers) == key)
        except IntegrationError as exc:
            if failed is None:
                raise
            failed.update((key, look_failed(exc)) for key in found)
            return {}

    def _find_tasks(self, subjects: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in _chunks(subjects, BATCH_LIMIT):
            groups = [{"filters": [{"propertyName": "hs_task_subject", "operator": "IN", "values": chunk}]}]
            for record in self._search_all("tasks", groups, ["hs_task_subject"]):
                found.setdefault(record.properties.get("hs_task_subject") or "", record.id)
        return self._read_back("tasks", found, "hs_task_subject")

    def _read_back(self, object_type: str, found: dict[str, str], name: str,
                   belongs: Callable[[str, str | None], bool] = lambda key, value: key == value) -> dict[str, str]:
        """Read by id the records a search found (key -> id), keeping those whose `name` property still shows
        they are the key's: the search index may trail a change or a deletion.

        https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/objects/batch/read-objects
        (POST /crm/v3/objects/{objectType}/batch/read)
        """
        kept: dict[str, str] = {}
        by_id = {record_id: key for key, record_id in found.items()}
        for ids in _chunks(list(by_id), BATCH_LIMIT):
            inputs = [{"id": record_id} for record_id in ids]
            body = {"properties": [name], "propertiesWithHistory": [], "inputs": inputs}
            page = self._batch_call("POST", f"/crm/v3/objects/{object_type}/batch/read", body)
            for record in page.results:
                key = by_id.get(record.id)
                if key is not None and belongs(key, record.properties.get(name)):
                    kept[key] = record.id
        return kept

    def _update_contacts(self, updates: list[tuple[str, str, dict[str, str]]], result: BatchResult) -> None:
        """POST /crm/v3/objects/contacts/batch/update. HubSpot refuses one id twice in a batch, so a contact two
        leads share is updated once in the batch and once more on its own."""
        batch: list[tuple[str, str, dict[str, str]]] = []
        seen: set[str] = set()
        for ref, contact_id, properties in updates:
            if contact_id in seen:
                with _kept(result, [ref]):
                    self._update_contact(contact_id, properties)
                    result.ids[ref] = contact_id
            else:
                seen.add(contact_id)
                batch.append((ref, contact_id, properties))
        by_id = {contact_id: ref for ref, contact_id, _ in batch}
        for chunk in _chunks(batch, BATCH_LIMIT):
            inputs = [{"id": contact_id, "properties": properties, "objectWriteTraceId": ref}
                      for ref, contact_id, properties in chunk]
            with _kept(result, [ref for ref, _, _ in chunk]):
                page = self._batch("contacts", "update", inputs)
                _collect(page, [ref for ref, _, _ in chunk], lambda record: by_id.get(record.id), result)

    def _batch(self, object_type: str, action: str, inputs: list[dict[str, Any]]) -> BatchPage:
        return self._batch_call("POST", f"/crm/v3/objects/{object_type}/batch/{action}", {"inputs": inputs})

    def _batch_call(self, method: str, path: str, body: dict[str, Any]) -> BatchPage:
        return _read(BatchPage, self.json(method, path, json=body), f"{method} {path}")

    def _search_all(self, object_type: str, filter_groups: list[dict[str, Any]],
                    properties: list[str]) -> list[BatchRecord]:
        """Up to one page (100) of records matching any of the groups, with the named properties."""
        path = f"/crm/v3/objects/{object_type}/search"
        body = {"filterGroups": filter_groups, "properties": properties, "limit": BATCH_LIMIT}
        return _read(BatchPage, self.json("POST", path, json=body), f"POST {path}").results

    def _upsert_by_lead_ref(self, lead_ref: str, properties: dict[str, str]) -> str:
        """Create the contact keyed by our lead reference, or update the one a lost answer already created: search
        trails writes by seconds, the unique property does not.

        https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/contacts/batch/upsert-contacts
        (POST /crm/v3/objects/contacts/batch/upsert, `idProperty` a unique-value property)
        """
        path = "/crm/v3/objects/contacts/batch/upsert"
        body = {"inputs": [{"id": lead_ref, "idProperty": LEAD_REF_PROPERTY, "properties": properties}]}
        return _read(BatchAnswer, self.json("POST", path, json=body), f"POST {path}").results[0].id

    def _search(self, object_type: str, filter_groups: list[dict[str, Any]]) -> str | None:
        """The id of the first record matching the filter groups, or None.

        https://developers.hubspot.com/docs/api/crm/search (POST /crm/v3/objects/{objectType}/search)
        """
        path = f"/crm/v3/objects/{object_type}/search"
        # Ask for no more than the id so the answer carries no PHI.
        body = {"filterGroups": filter_groups, "properties": ["hs_object_id"], "limit": 1}
        page = _read(SearchPage, self.json("POST", path, json=body), f"POST {path}")
        return page.results[0].id if page.results else None

    def _create(self, object_type: str, body: dict[str, Any]) -> str:
        path = f"/crm/v3/objects/{object_type}"
        return _read(CrmObject, self.json("POST", path, json=body), f"POST {path}").id

    def _update_contact(self, contact_id: str, properties: dict[str, str]) -> None:
        if properties:
            path = f"/crm/v3/objects/contacts/{quote(contact_id, safe='')}"
            self.request("PATCH", path, json={"properties": properties})


def hubspot_rate_limit(redis: Store, requests_per_10_seconds: int, searches_per_second: int) -> SharedRateLimit:
    """HubSpot's budget for a private app, shared by every worker: all calls count against the 10-second burst
    limit, searches also against the search limit; a limit of 0 is not enforced.
    https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines
    """
    limits = {
        "request": [Window(10, requests_per_10_seconds)] if requests_per_10_seconds else [],
        "search": [Window(1, searches_per_second)] if searches_per_second else [],
    }
    return SharedRateLimit(redis, "HubSpot", limits)


def _contact_properties(card: ContactCard) -> dict[str, str]:
    # Empty values are left out as well as None: sending "" would blank what HubSpot already holds.
    values = {"firstname": card.first_name, "lastname": card.last_name}
    # HubSpot keeps one contact per email: a second person's inbox stays on the first person's contact.
    values |= {"email": None if card.email_shared_with else card.email, "phone": card.phone}
    return {name: value for name, value in values.items() if value}


def _custom_properties(card: ContactCard) -> dict[str, str]:
    values = {LEAD_REF_PROPERTY: card.lead_ref, "admitflow_source_form": card.source,
              "admitflow_repeat_count": str(card.repeat_count)}
    if card.consent is not None:
        values["admitflow_consent"] = "true" if card.consent else "false"
    return values


def _note_input(contact_id: str, text: str, at: datetime) -> dict[str, Any]:
    return {
        "properties": {"hs_note_body": _as_html(text), "hs_timestamp": _timestamp(at)},
        "associations": [_association(contact_id, NOTE_TO_CONTACT)],
    }


def _task_input(contact_id: str, task: CallbackTaskSpec) -> dict[str, Any]:
    properties = {
        "hs_task_subject": task.subject,
        "hs_task_body": _as_html(task.body),
        "hs_timestamp": _timestamp(task.due_at),
        "hs_task_status": "NOT_STARTED",
        "hs_task_priority": "HIGH",
        "hs_task_type": "CALL",
    }
    if task.owner_id:
        properties[OWNER_PROPERTY] = task.owner_id
    return {"properties": properties, "associations": [_association(contact_id, TASK_TO_CONTACT)]}


Item = TypeVar("Item")


def _chunks(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _marked(body: str | None, markers: dict[str, str]) -> str | None:
    """The key of the marker a note body contains, if any."""
    return next((key for marker, key in markers.items() if body and marker in body), None)


def _collect(page: BatchPage, keys: list[str], key_of: Callable[[BatchRecord], str | None],
             result: BatchResult) -> None:
    """Record each result under its input's key (by `objectWriteTraceId`, else by `key_of`); an input with no
    result failed in a `207` answer."""
    wanted = set(keys)
    for record in page.results:
        key = record.objectWriteTraceId if record.objectWriteTraceId in wanted else key_of(record)
        if key in wanted:
            result.ids[key] = record.id
    categories = {error.category for error in page.errors if error.category and _CATEGORY.fullmatch(error.category)}
    detail = ", ".join(sorted(categories)) or "no result for it"
    for key in keys:
        if key in result.ids:
            continue
        if "VALIDATION_ERROR" in categories:
            # The answer does not say which input was invalid: each is sent again on its own for a precise error.
            result.errors[key] = InvalidRequest(f"HubSpot refused a record of a batch ({detail})")
        else:
            message = f"HubSpot's batch answer left this record out ({detail}); will retry"
            result.errors[key] = ServiceUnavailable(message)


@contextmanager
def _kept(result: BatchResult, keys: list[str]) -> Iterator[None]:
    """Once a batch call has learnt something (found or ruled out earlier records, written or failed some items), a
    write that fails is those items' error rather than the whole call's, so what was learnt reaches the caller."""
    try:
        yield
    except IntegrationError as exc:
        if not (result.ids or result.absent or result.errors or result.found):
            raise
        result.errors.update((key, exc) for key in keys)


def _filter_group(*filters: tuple[str, str]) -> dict[str, Any]:
    """Filters ANDed together; `associations.contact` matches records associated with that contact id."""
    return {"filters": [{"propertyName": name, "operator": "EQ", "value": value} for name, value in filters]}


def _association(contact_id: str, type_id: int) -> dict[str, Any]:
    return {
        "to": {"id": contact_id},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    }


def _timestamp(at: datetime) -> str:
    """`hs_timestamp` takes epoch millis or UTC ISO-8601; we send ISO. Naive datetimes are taken as UTC."""
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_html(text: str) -> str:
    """HubSpot renders note and task bodies as HTML: escape the person's words and keep their line breaks."""
    return html.escape(text.replace("\r\n", "\n")).replace("\n", "<br>")


def _read(model: type[Answer], payload: Any, where: str) -> Answer:
    try:
        return model.model_validate(payload)
    except ValidationError:
        # Not chained: a pydantic error quotes the input it rejected.
        message = f"HubSpot answered {where} with a body we could not read; will retry"
        raise ServiceUnavailable(message) from None


def _error_body(response: requests.Response) -> ErrorBody:
    try:
        return ErrorBody.model_validate(response.json())
    except ValueError:
        return ErrorBody()


def _where(response: requests.Response) -> str:
    """Method and path only: query strings can carry search terms."""
    return f"{response.request.method} {urlsplit(response.request.url or '').path}"

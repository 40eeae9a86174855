"""HubSpot CRM v3 behind our `CRM` protocol, authenticated with a private-app token.

Contacts are matched by email, else by phone; notes and the callback task hang off the contact. Error messages
name the call and HubSpot's error category, never a request or response body (both hold PHI).
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import requests
from pydantic import BaseModel, ValidationError

from integrations.crm import CallbackTaskSpec, CallRecord, ContactCard
from integrations.errors import Conflict, InvalidRequest, RateLimited, ServiceUnavailable
from integrations.http import HttpService
from integrations.hubspot.models import BatchAnswer, CrmObject, ErrorBody, SearchPage
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

# Set only when we create the contact: on an existing one they would overwrite what admissions already set.
_NEW_LEAD = {"hs_lead_status": "NEW", "lifecyclestage": "lead"}
_CATEGORY = re.compile(r"[A-Z][A-Z0-9_]{0,63}")

# A 429 without Retry-After: sit out one burst window.
# https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines
DEFAULT_PAUSE_SECONDS = 10.0

Answer = TypeVar("Answer", bound=BaseModel)


class HubSpotCRM(HttpService):
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
    ) -> None:
        if not token:
            raise ValueError("HubSpotCRM needs a private-app token: set HUBSPOT_TOKEN")
        super().__init__(base_url, timeout=timeout, session=session)
        self._token = token
        self._rate_limit = rate_limit
        self._custom_properties = custom_properties

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
        if contact_id is None:
            contact_id = self._find_contact(card)
        if contact_id is not None:
            self._update_contact(contact_id, properties)
            return contact_id
        try:
            if self._custom_properties:
                return self._upsert_by_lead_ref(card.lead_ref, {**properties, **_NEW_LEAD})
            return self._create("contacts", {"properties": {**properties, **_NEW_LEAD}})
        except Conflict as conflict:
            # Search lags writes by a few seconds, so it can miss a contact that has this email; HubSpot's 409
            # then names the existing contact's id.
            if conflict.existing_id is None:
                raise
            self._update_contact(conflict.existing_id, properties)
            return conflict.existing_id

    def add_note(self, contact_id: str, text: str, at: datetime) -> str:
        """Attach `text` as a note on the contact's timeline.

        https://developers.hubspot.com/docs/api/crm/notes (POST /crm/v3/objects/notes)
        """
        body = {
            "properties": {"hs_note_body": _as_html(text), "hs_timestamp": _timestamp(at)},
            "associations": [_association(contact_id, NOTE_TO_CONTACT)],
        }
        return self._create("notes", body)

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
        body = {"properties": properties, "associations": [_association(contact_id, TASK_TO_CONTACT)]}
        return self._create("tasks", body)

    def assign_callback_task(self, task_id: str, owner_id: str) -> None:
        """Give the task to `owner_id`, the HubSpot owner of the staff member who claimed the lead.

        https://developers.hubspot.com/docs/api/crm/tasks (PATCH /crm/v3/objects/tasks/{taskId})
        """
        path = f"/crm/v3/objects/tasks/{quote(task_id, safe='')}"
        self.request("PATCH", path, json={"properties": {OWNER_PROPERTY: owner_id}})

    def log_call(self, contact_id: str, task_id: str | None, call: CallRecord) -> str:
        """Log the bridged call on the contact's timeline, then mark the callback task COMPLETED.

        https://developers.hubspot.com/docs/api/crm/calls (POST /crm/v3/objects/calls; hs_call_duration is in
        milliseconds; 194 = call to contact)
        """
        properties = {
            "hs_timestamp": _timestamp(call.started_at),
            "hs_call_title": f"Callback {call.lead_ref}",
            "hs_call_direction": "OUTBOUND",
            "hs_call_status": "COMPLETED",
            "hs_call_body": f"Bridged by admitflow from the center's number (lead {call.lead_ref}).",
        }
        if call.duration_seconds is not None:
            properties["hs_call_duration"] = str(call.duration_seconds * 1000)
        if call.owner_id:
            properties[OWNER_PROPERTY] = call.owner_id
        call_id = self._create(
            "calls", {"properties": properties, "associations": [_association(contact_id, CALL_TO_CONTACT)]}
        )
        if task_id:
            path = f"/crm/v3/objects/tasks/{quote(task_id, safe='')}"
            self.request("PATCH", path, json={"properties": {"hs_task_status": "COMPLETED"}})
        return call_id

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
    values |= {"email": card.email, "phone": card.phone}
    return {name: value for name, value in values.items() if value}


def _custom_properties(card: ContactCard) -> dict[str, str]:
    values = {LEAD_REF_PROPERTY: card.lead_ref, "admitflow_source_form": card.source,
              "admitflow_repeat_count": str(card.repeat_count)}
    if card.consent is not None:
        values["admitflow_consent"] = "true" if card.consent else "false"
    return values


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

"""Salesforce behind our `CRM` protocol: the person is a Lead keyed by our lead reference in an External ID field,
and the note and the callback task are Tasks on that Lead.

Every write is keyed by our own id, so sending it again after a lost answer updates instead of duplicating: the
Lead by the lead reference, each Task (note, callback, call log) by our key in a Task External ID field
(docs/idempotency.md). The Composite API is not used: a step is conditional on the previous answer (upsert, then
update the record a duplicate rule named), which a composite request cannot express, and its all-200 envelope
would hide the status codes our errors are built from.
Error messages name the call and Salesforce's errorCode values, never a request or response body (both hold PHI).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import requests

from integrations.crm import CallbackTaskSpec, CallRecord, ContactCard, NoteRoom
from integrations.errors import Conflict, IntegrationError, InvalidRequest, RateLimited, Unauthorized
from integrations.http import parse_retry_after
from integrations.salesforce.auth import AccessToken, TokenProvider
from integrations.salesforce.corrections import SalesforceCorrections
from integrations.salesforce.models import (
    ApiError,
    Record,
    SaveResult,
    error_codes,
    error_list,
    read_answer,
)

LEAD_SOURCE = "Website"
UNKNOWN_LAST_NAME = "(unknown)"  # Lead.LastName is required
NOTE_SUBJECT = "Website request"
CARD_ATTRIBUTES = frozenset({"source", "repeat_count", "consent_to_text"})
# Attribution keys a Lead field may be mapped to (ContactCard.attribution), written when the Lead is created.
ATTRIBUTION_KEYS = frozenset({"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "gclid",
                              "fbclid", "msclkid", "referrer", "landing_page", "form_page"})
# Field lengths from the Lead and Task object reference: a longer value fails the whole save with STRING_TOO_LONG.
_LIMITS = {"FirstName": 40, "LastName": 80, "Description": 32000, "Attribution": 255}
_OWNER_REJECTIONS = {"INVALID_CROSS_REFERENCE_KEY", "FIELD_INTEGRITY_EXCEPTION", "MALFORMED_ID",
                     "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY"}
_FIELD_MISSING = {"NOT_FOUND", "INVALID_FIELD", "INVALID_FIELD_FOR_INSERT_UPDATE"}
_API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")
# On Lead saves: a duplicate rule that blocks the save names the matched Lead with its fields, and runs with the
# integration user's sharing, so the Lead it names is one we can update (allowSave stays false: never a second Lead).
# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_duplicaterules.htm (API 52.0+)
DUPLICATE_RULE_HEADER = {
    "Sforce-Duplicate-Rule-Header": "allowSave=false; includeRecordDetails=true; runAsCurrentUser=true"
}


class Rejected(InvalidRequest):
    """Salesforce rejected a request (400); `codes` are its errorCode values, for a caller that can recover."""

    def __init__(self, message: str, *, codes: frozenset[str]) -> None:
        super().__init__(message)
        self.codes = codes


class SalesforceCRM(SalesforceCorrections):
    """The `CRM` the worker uses when Salesforce credentials are set.

    `lead_fields` maps card attributes (source, repeat_count, consent_to_text) and attribution keys (utm_source,
    gclid, landing_page...) to custom Lead fields; attributes not in it are not sent. Attribution goes only into the
    first save, like LeadSource: on a Lead staff already work it would overwrite the source that brought it.
    """

    name = "Salesforce"
    service = "Salesforce"

    def __init__(
        self,
        token_provider: TokenProvider,
        *,
        api_version: str = "60.0",
        external_id_field: str = "Admitflow_Ref__c",
        task_external_id_field: str = "Admitflow_Key__c",
        center_timezone: ZoneInfo | None = None,
        company_placeholder: str = "Individual",
        lead_fields: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        if not re.fullmatch(r"\d{2,3}\.0", api_version):
            raise ValueError("the Salesforce API version looks like 60.0")
        if not _API_NAME.fullmatch(external_id_field) or not external_id_field.endswith("__c"):
            raise ValueError("the external ID field must be a custom field's API name, such as Admitflow_Ref__c")
        if not _API_NAME.fullmatch(task_external_id_field) or not task_external_id_field.endswith("__c"):
            raise ValueError("the Task external ID field must be a custom field's API name, such as Admitflow_Key__c")
        if not company_placeholder.strip():
            raise ValueError("Lead.Company is required: give a company placeholder such as Individual")
        lead_fields = dict(lead_fields or {})
        if unknown := set(lead_fields) - CARD_ATTRIBUTES - ATTRIBUTION_KEYS:
            raise ValueError(f"lead_fields maps unknown card attributes {sorted(unknown)}")
        if bad := [name for name in lead_fields.values() if not _API_NAME.fullmatch(name)]:
            raise ValueError(f"lead_fields has values that are not field API names: {bad}")
        # The instance URL comes with each token; this placeholder is replaced before the first call.
        super().__init__("https://instance.invalid", timeout=timeout, session=session)
        self.auth_hint = token_provider.auth_hint
        self._tokens = token_provider
        self._data = f"/services/data/v{api_version}"
        self._external_id_field = external_id_field
        self._task_key_field = task_external_id_field
        self._zone = center_timezone or ZoneInfo("UTC")
        self._company = company_placeholder
        self._lead_fields = lead_fields
        self.note_room = NoteRoom(_LIMITS["Description"])

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        token = self._tokens.token()
        try:
            return self._send(token, method, path, **kwargs)
        except Unauthorized as refused:
            if refused.status != 401:
                raise
        # 401 is INVALID_SESSION_ID: the session expired or was revoked. One fresh token, then the refusal stands.
        return self._send(self._tokens.refresh(), method, path, **kwargs)

    def upsert_contact(self, card: ContactCard, contact_id: str | None) -> str:
        """Create or update the Lead whose external ID is the card's lead reference; returns the Lead id.

        Company, LeadSource and the LastName placeholder go only into the first save (no `contact_id` yet): on a
        Lead admissions already works they would overwrite what staff set. If that Lead is gone (deleted, or merged
        away), the upsert tries to create it without them, Salesforce answers REQUIRED_FIELD_MISSING, and we save
        it again with them.
        """
        known = contact_id is not None
        try:
            return self._save_lead(card, creating=not known)
        except Rejected as rejected:
            if not known or "REQUIRED_FIELD_MISSING" not in rejected.codes:
                raise
        return self._save_lead(card, creating=True)

    def lookup_lag_seconds(self, step: str) -> float:
        """Leads and Tasks are upserted by our own keys: a retry never needs to wait for an index."""
        return 0.0

    def add_note(self, contact_id: str, text: str, at: datetime, *, look_first: bool = False) -> str:
        """Record the person's message as a completed Task on the Lead; returns the Task id.

        A Task rather than a ContentNote: it takes the Lead as WhoId in one call, holds plain text, and shows in the
        Lead's activity history, which moves to the Contact when admissions converts the Lead. A ContentNote needs
        HTML-escaped base64 content, a second insert (ContentDocumentLink) to attach it, and Notes enabled.
        ActivityDate is `at`'s date at the center. The Task is upserted by a key made of the Lead and the note's
        first line (which names the request), so one whose answer was lost is updated, never added again.
        https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_objects_task.htm
        """
        first_line = text.split("\n", 1)[0]
        body = {
            "Subject": NOTE_SUBJECT,
            "Description": _fit("Description", text),
            "WhoId": contact_id,
            "Status": "Completed",
            "ActivityDate": self._local_date(at),
        }
        return self._upsert_task(_task_key("note", contact_id, first_line), body)

    def ensure_callback_task(self, contact_id: str, task: CallbackTaskSpec) -> str:
        """Upsert the Lead's callback Task (a high-priority call) by a key made of the lead reference: created
        once, however often a lost answer makes us send it again. Its due date is the center's local date."""
        body: dict[str, Any] = {
            "Subject": task.subject,
            "Description": _fit("Description", task.body),
            "WhoId": contact_id,
            "Priority": "High",
            "Status": "Not Started",
            "ActivityDate": self._local_date(task.due_at),
            "IsReminderSet": True,
            "ReminderDateTime": _timestamp(task.due_at),
        }
        if task.owner_id:
            body["OwnerId"] = task.owner_id
        return self._upsert_task(_task_key("callback", task.lead_ref), body)

    def assign_callback_task(self, task_id: str, owner_id: str) -> None:
        """Give the callback Task to the Salesforce User who claimed the lead (PATCH /sobjects/Task/{id} -> 204).

        https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm
        """
        self.request("PATCH", f"{self._data}/sobjects/Task/{quote(task_id, safe='')}", json={"OwnerId": owner_id})

    def log_call(self, contact_id: str, call: CallRecord, *, look_first: bool = False) -> str:
        """Log the bridged call as a completed call Task on the Lead, upserted by a key made of the lead reference.

        https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_objects_task.htm
        (TaskSubtype "Call", CallType, CallDurationInSeconds)
        """
        body: dict[str, Any] = {
            "Subject": f"Call {call.lead_ref}",
            "TaskSubtype": "Call",
            "CallType": "Outbound",
            "Status": "Completed",
            "WhoId": contact_id,
            "ActivityDate": self._local_date(call.started_at),
            "Description": f"Bridged by admitflow from the center's number (lead {call.lead_ref}).",
        }
        if call.duration_seconds is not None:
            body["CallDurationInSeconds"] = call.duration_seconds
        if call.owner_id:
            body["OwnerId"] = call.owner_id
        return self._upsert_task(_task_key("call", call.lead_ref), body)

    def complete_callback_task(self, task_id: str) -> None:
        """PATCH /sobjects/Task/{id} -> 204."""
        self.request("PATCH", f"{self._data}/sobjects/Task/{quote(task_id, safe='')}", json={"Status": "Completed"})

    def describe_error(self, response: requests.Response) -> str:
        """Salesforce's errorCode values (INVALID_FIELD, DUPLICATES_DETECTED...); `message` may echo PHI."""
        return ", ".join(error_codes(error_list(response)))

    def raise_for_response(self, response: requests.Response) -> None:
        """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm"""
        status = response.status_code
        where = _where(response)
        if status == 300:
            raise Conflict(f"more than one Salesforce Lead has this {self._external_id_field} ({where}, 300): "
                           "mark the field Unique on Lead")
        if status < 400 or status in (401, 429) or status >= 500:
            super().raise_for_response(response)
            return
        errors = error_list(response)
        codes = error_codes(errors)
        detail = ", ".join(codes) or "no error code"
        if status == 403 and "REQUEST_LIMIT_EXCEEDED" in codes:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RateLimited(f"Salesforce's API request limit is used up ({where}, 403, REQUEST_LIMIT_EXCEEDED); "
                              "will retry", retry_after=retry_after)
        if status == 403:
            raise Unauthorized(f"Salesforce refused {where} (403, {detail}): give the integration user the API "
                               "Enabled permission and create and edit access to Leads and Tasks", status=403)
        if self._misses_task_key_field(errors, status, where):
            raise InvalidRequest(
                f"Salesforce has no usable external ID field {self._task_key_field} on Task ({where}, {status}, "
                f"{detail}): create it on Task (Activity) as Text(255), Unique, External ID, let the integration user "
                "edit it, or set SALESFORCE_TASK_EXTERNAL_ID_FIELD to the one you made", status=status,
            )
        if self._misses_external_id_field(errors, status, where):
            raise InvalidRequest(
                f"Salesforce has no usable external ID field {self._external_id_field} on Lead ({where}, {status}, "
                f"{detail}): create it on Lead as Text, Unique, External ID, and let the integration user edit it",
                status=status,
            )
        if "DUPLICATES_DETECTED" in codes:
            raise self._duplicate(errors, where)
        if any("OwnerId" in error.fields and error.error_code in _OWNER_REJECTIONS for error in errors) or (
            "INACTIVE_OWNER_OR_USER" in codes
        ):
            raise InvalidRequest(f"Salesforce rejected the task's OwnerId ({where}, {status}, {detail}): an owner id "
                                 "in the roster is not an active Salesforce user; fix owner ids in ROSTER_FILE "
                                 "(Salesforce User ids, 005...)", status=status)
        if "UNABLE_TO_LOCK_ROW" in codes:
            raise IntegrationError(f"Salesforce had the record locked by another update ({where}); will retry",
                                   permanent=False, status=status)
        if "CANNOT_UPDATE_CONVERTED_LEAD" in codes:
            raise InvalidRequest(f"Salesforce will not update a converted Lead ({where}): admissions already works "
                                 "this person as a Contact; add the new request there by hand", status=status)
        if status == 400:
            raise Rejected(f"Salesforce rejected {where} (400, {detail})", codes=frozenset(codes))
        super().raise_for_response(response)

    def _send(self, token: AccessToken, method: str, path: str, **kwargs: Any) -> requests.Response:
        self.base_url = token.instance_url
        # Sent per request rather than set on the session, which a caller may share with other services.
        headers = {"Authorization": f"Bearer {token.value}", "Accept": "application/json"}
        headers.update(kwargs.pop("headers", None) or {})
        return super().request(method, path, headers=headers, **kwargs)

    def _save_lead(self, card: ContactCard, *, creating: bool) -> str:
        fields = self._lead_values(card, creating=creating)
        try:
            return self._upsert_lead(card.lead_ref, fields)
        except Conflict as duplicate:
            # A duplicate rule blocked a new Lead and named the one it matched: that Lead becomes ours, unless it
            # may be another person's (a shared phone or inbox): taking it would flip it between the two.
            if duplicate.existing_id is None:
                raise
            if not card.match_existing:
                raise Conflict(f"{duplicate.message}: it may be another person's Lead (this person shares a phone or "
                               "inbox with another lead), so it is not taken over; set the duplicate rule's action "
                               "to Allow for the integration user") from None
            person = self._lead_values(card, creating=False)
            self._update_lead(duplicate.existing_id, {**person, self._external_id_field: card.lead_ref})
            return duplicate.existing_id

    def _upsert_lead(self, lead_ref: str, fields: dict[str, Any]) -> str:
        """Upsert by external ID: 201 with `{"id", "created": true}` when created, 200 with `"created": false`
        when updated (API 46.0+; 204 and no body before), 300 if several Leads share the value. The external ID
        field must not be in the body.

        https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
        (PATCH /services/data/vXX.X/sobjects/Lead/{field}/{value})
        """
        path = self._lead_by_ref(lead_ref)
        payload = self.json("PATCH", path, json=fields, headers=DUPLICATE_RULE_HEADER)
        if payload is None:
            return self._lead_id(lead_ref)
        return read_answer(SaveResult, payload, f"PATCH {path}").id

    def _lead_id(self, lead_ref: str) -> str:
        """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
        (GET /sobjects/Lead/{field}/{value}?fields=Id, "Retrieve a Record Using an External ID")"""
        path = self._lead_by_ref(lead_ref)
        return read_answer(Record, self.json("GET", path, params={"fields": "Id"}), f"GET {path}").id

    def _update_lead(self, lead_id: str, fields: dict[str, Any]) -> None:
        """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm
        (PATCH /sobjects/Lead/{id} -> 204, no body)"""
        self.request("PATCH", f"{self._data}/sobjects/Lead/{quote(lead_id, safe='')}", json=fields,
                     headers=DUPLICATE_RULE_HEADER)

    def _upsert_task(self, key: str, body: dict[str, Any]) -> str:
        """Upsert a Task by our key in the Task external ID field: 201 created, 200 updated (API 46.0+; 204 and no
        body before, then the id is read by the key).
        https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
        (PATCH /services/data/vXX.X/sobjects/Task/{field}/{value})"""
        path = f"{self._data}/sobjects/Task/{self._task_key_field}/{quote(key, safe='')}"
        payload = self.json("PATCH", path, json=body)
        if payload is None:
            return read_answer(Record, self.json("GET", path, params={"fields": "Id"}), f"GET {path}").id
        return read_answer(SaveResult, payload, f"PATCH {path}").id

    def _local_date(self, at: datetime) -> str:
        """A date field (ActivityDate) is a calendar date with no zone: the center's date, not UTC's."""
        aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        return aware.astimezone(self._zone).date().isoformat()

    def _lead_by_ref(self, lead_ref: str) -> str:
        return f"{self._data}/sobjects/Lead/{self._external_id_field}/{quote(lead_ref, safe='')}"

    def _lead_values(self, card: ContactCard, *, creating: bool) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if creating:
            values |= {"LastName": UNKNOWN_LAST_NAME, "Company": self._company, "LeadSource": LEAD_SOURCE}
        # Empty values are left out as well as None: sending "" would blank what Salesforce already holds.
        person = {"FirstName": card.first_name, "LastName": card.last_name, "Email": card.email, "Phone": card.phone}
        values |= {name: _fit(name, value) for name, value in person.items() if value}
        for attribute, field_name in self._lead_fields.items():
            if attribute in ATTRIBUTION_KEYS:
                value = card.attribution.get(attribute) if creating else None
            else:
                value = getattr(card, attribute)
            if value is not None:
                values[field_name] = _fit("Attribution", value) if isinstance(value, str) else value
        return values

    def _misses_external_id_field(self, errors: list[ApiError], status: int, where: str) -> bool:
        """Upserting by a missing field answers 404 NOT_FOUND "Provided external ID field does not exist or is not
        accessible: <field>"; a field that is not an External ID, or that the user cannot edit, is named by
        INVALID_FIELD or INVALID_FIELD_FOR_INSERT_UPDATE."""
        field_name = self._external_id_field
        if status == 404 and f"/sobjects/Lead/{field_name}/" in where:
            return True
        return any(
            error.error_code in _FIELD_MISSING and (field_name in error.fields or field_name in error.message)
            for error in errors
        )

    def _misses_task_key_field(self, errors: list[ApiError], status: int, where: str) -> bool:
        field_name = self._task_key_field
        if status == 404 and f"/sobjects/Task/{field_name}/" in where:
            return True
        return "/sobjects/Task/" in where and any(
            error.error_code in _FIELD_MISSING and (field_name in error.fields or field_name in error.message)
            for error in errors
        )

    def _duplicate(self, errors: list[ApiError], where: str) -> Conflict:
        for error in errors:
            if error.duplicate_result is not None and (ids := error.duplicate_result.record_ids("Lead")):
                return Conflict(f"Salesforce matched an existing Lead ({where}, DUPLICATES_DETECTED)",
                                existing_id=ids[0])
        rules = [error.duplicate_result.duplicate_rule for error in errors if error.duplicate_result is not None]
        rule = next((name for name in rules if name and _API_NAME.fullmatch(name)), "on Lead")
        return Conflict(
            f"Salesforce's duplicate rule {rule} blocked {where} (DUPLICATES_DETECTED) without naming a Lead the "
            "worker can update: set the rule's action to Allow for the integration user (allow save), or adjust the "
            "rule so it matches Leads the integration user can read"
        )


def _task_key(kind: str, *parts: str) -> str:
    """Our key for a Task: the kind and what names it (a lead reference, or a Lead id and the note's first line,
    hashed to fit the field), with no PHI. A Text External ID field holds up to 255 characters."""
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32] if len(parts) > 1 else parts[0]
    return f"admitflow-{kind}-{digest}"


def _fit(field_name: str, value: str) -> str:
    limit = _LIMITS.get(field_name)
    return value[:limit] if limit else value


def _timestamp(at: datetime) -> str:
    """A dateTime field value in UTC ISO-8601. Naive datetimes are taken as UTC."""
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _where(response: requests.Response) -> str:
    """Method and path only: query strings carry SOQL."""
    return f"{response.request.method} {urlsplit(response.request.url or '').path}"

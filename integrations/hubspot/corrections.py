"""Merging a person's two HubSpot contacts, and removing a note, for leads merged or split by hand or by dedup."""

from __future__ import annotations

from urllib.parse import quote

from integrations.crm import MergeOutcome
from integrations.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from integrations.http import HttpService
from integrations.hubspot.models import CrmObject


class HubSpotCorrections(HttpService):
    """The `CRM` protocol's correction methods for `HubSpotCRM`."""

    def merge_contacts(self, contact_id: str, duplicate_id: str, duplicate_task_id: str | None) -> MergeOutcome:
        """Archive the duplicate's callback task, then merge the duplicate contact into the contact.

        https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/basic/post-crm-v3-objects-contacts-merge
        (POST /crm/v3/objects/contacts/merge, `{"primaryObjectId", "objectIdToMerge"}` -> the merged record). The
        merged record gets a new id, and both old ids keep resolving to it (HubSpot developer changelog, "Updated
        merge functionality for contacts and companies"): a merge repeated after a lost answer is refused, and
        reading the two old ids then tells that it went through.
        """
        if duplicate_task_id:
            self._archive("tasks", duplicate_task_id)
        body = {"primaryObjectId": contact_id, "objectIdToMerge": duplicate_id}
        try:
            return MergeOutcome(_read_id(self.json("POST", "/crm/v3/objects/contacts/merge", json=body), "merge"))
        except (InvalidRequest, Conflict, NotFound):
            merged, other = self._current_id(contact_id), self._current_id(duplicate_id)
            if merged is None or merged != other:
                raise
            return MergeOutcome(merged)

    def remove_note(self, note_id: str) -> None:
        """https://developers.hubspot.com/docs/api/crm/notes (DELETE /crm/v3/objects/notes/{noteId}: archive)."""
        self._archive("notes", note_id)

    def _archive(self, object_type: str, object_id: str) -> None:
        try:
            self.request("DELETE", f"/crm/v3/objects/{object_type}/{quote(object_id, safe='')}")
        except NotFound:
            return  # archived already

    def _current_id(self, contact_id: str) -> str | None:
        """The id a contact id now resolves to (another after a merge), or None when there is no such contact.
        Only the id is asked for: the answer carries no PHI."""
        path = f"/crm/v3/objects/contacts/{quote(contact_id, safe='')}"
        try:
            return _read_id(self.json("GET", path, params={"properties": "hs_object_id"}), "read")
        except NotFound:
            return None


def _read_id(payload: object, what: str) -> str:
    try:
        return CrmObject.model_validate(payload).id
    except ValueError:
        message = f"HubSpot answered a contact {what} with a body we could not read; will retry"
        raise ServiceUnavailable(message) from None

"""Moving a person's activities between Salesforce Leads, and removing a note, for leads merged or split.

Salesforce's REST API cannot merge Leads (merging is a SOAP `merge()` call or the Lead's Merge button): the
notes and tasks are moved to the surviving Lead here, and merging the emptied Lead is left to a person, who is
told so in plain words.
"""

from __future__ import annotations

from urllib.parse import quote

from integrations.crm import MergeOutcome
from integrations.errors import InvalidRequest, NotFound
from integrations.http import HttpService
from integrations.salesforce.models import QueryPage, read_answer


class SalesforceCorrections(HttpService):
    """The `CRM` protocol's correction methods for `SalesforceCRM`."""

    _data: str  # /services/data/vXX.X, set by the client

    def merge_contacts(self, contact_id: str, duplicate_id: str, duplicate_task_id: str | None) -> MergeOutcome:
        """Delete the duplicate Lead's callback Task, then point its other Tasks (the notes, logged calls) at the
        surviving Lead (PATCH /sobjects/Task/{id} `{"WhoId"}`). Repeating it finds nothing left to move."""
        if duplicate_task_id:
            self._delete_task(duplicate_task_id)
        soql = f"SELECT Id FROM Task WHERE WhoId = '{_lead_id(duplicate_id)}' LIMIT 200"  # noqa: S608 (an id)
        path = f"{self._data}/query"
        for record in read_answer(QueryPage, self.json("GET", path, params={"q": soql}), f"GET {path}").records:
            self.request("PATCH", f"{self._data}/sobjects/Task/{quote(record.id, safe='')}",
                         json={"WhoId": contact_id})
        return MergeOutcome(contact_id, left_for_a_person=(
            f"merge Salesforce Lead {duplicate_id} into Lead {contact_id} (open Lead {contact_id}, Merge Leads): "
            f"admitflow moved its notes and tasks to {contact_id}, but Salesforce's REST API cannot merge Leads"))

    def remove_note(self, note_id: str) -> None:
        """A note is a completed Task on the Lead (DELETE /sobjects/Task/{id} -> 204)."""
        self._delete_task(note_id)

    def _delete_task(self, task_id: str) -> None:
        try:
            self.request("DELETE", f"{self._data}/sobjects/Task/{quote(task_id, safe='')}")
        except NotFound:
            return  # deleted already


def _lead_id(value: str) -> str:
    """A Salesforce record id is 15 or 18 letters and digits; anything else is refused before it reaches SOQL."""
    if not (len(value) in (15, 18) and value.isalnum()):
        raise InvalidRequest("the Lead id to merge is not a Salesforce id (15 or 18 letters and digits)")
    return value

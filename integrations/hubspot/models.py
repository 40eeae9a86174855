"""The few parts of HubSpot's JSON answers the client reads; everything else is ignored.

Record properties are never modelled: they hold PHI and the client only needs ids.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# "Contact already exists. Existing ID: 12345" (409 on create), seen in HubSpot/hubspot-api-nodejs#545.
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class CrmObject(_Answer):
    """A created or found record: `{"id": "123", "properties": {...}, ...}`."""

    id: str = Field(min_length=1)


class SearchPage(_Answer):
    """`POST /crm/v3/objects/{type}/search` answers `{"total": n, "results": [...], "paging": ...}`."""

    total: int = 0
    results: list[CrmObject] = Field(default_factory=list)


class BatchAnswer(_Answer):
    """`POST /crm/v3/objects/{type}/batch/upsert` answers `{"status": "COMPLETE", "results": [...], ...}`."""

    results: list[CrmObject] = Field(min_length=1)


class BatchRecord(CrmObject):
    """A record in a batch answer. `properties` are read only to tell which input a result belongs to, when
    HubSpot leaves out `objectWriteTraceId`; they may hold PHI and are never logged."""

    objectWriteTraceId: str | None = None
    properties: dict[str, str | None] = Field(default_factory=dict)


class BatchError(_Answer):
    category: str | None = None


class BatchPage(_Answer):
    """A batch endpoint's answer: `201`/`200` with every result, or `207` with `errors` for the inputs that failed.
    https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/objects/batch/create-objects"""

    results: list[BatchRecord] = Field(default_factory=list)
    errors: list[BatchError] = Field(default_factory=list)


class ErrorDetail(_Answer):
    message: str = ""
    code: str | None = None
    context: dict[str, Any] | None = None


class ErrorBody(_Answer):
    """HubSpot's error envelope; every field is optional (https://developers.hubspot.com/docs/faq/api-error-responses).

    `message` may echo submitted values: read it only to pull out ids and property names, never to show it.
    """

    category: str | None = None
    message: str = ""
    errors: list[ErrorDetail] = Field(default_factory=list)

    def existing_id(self) -> str | None:
        match = _EXISTING_ID.search(self.message)
        return match.group(1) if match else None

    def rejected_properties(self) -> set[str]:
        """Names of the properties HubSpot rejected: from `errors[].context.propertyName` when present, else
        from the JSON list object endpoints embed in the message ("Property values were not valid: [...]")."""
        names: set[str] = set()
        for detail in self.errors:
            value = (detail.context or {}).get("propertyName")
            if isinstance(value, str):
                names.add(value)
            elif isinstance(value, list):
                names.update(item for item in value if isinstance(item, str))
        for message in [self.message, *(detail.message for detail in self.errors)]:
            names.update(_embedded_property_names(message))
        return names


def _embedded_property_names(message: str) -> set[str]:
    start = message.find("[")
    if start < 0:
        return set()
    try:
        entries = json.loads(message[start:])
    except ValueError:
        return set()
    if not isinstance(entries, list):
        return set()
    names = (entry.get("name") for entry in entries if isinstance(entry, dict))
    return {name for name in names if isinstance(name, str)}

"""The few parts of Salesforce's JSON answers the client reads; everything else is ignored.

Record fields are never modelled beyond `Id`: they hold PHI and the client only needs ids.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import requests
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from integrations.errors import ServiceUnavailable

_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class TokenAnswer(_Answer):
    """`POST /services/oauth2/token` answers `{"access_token", "instance_url", "id", "token_type", "issued_at",
    "signature", "scope"}`; it has no `expires_in`, so a token is used until Salesforce refuses it.

    https://developer.salesforce.com/docs/atlas.en-us.262.0.chatterapi.meta/chatterapi/quickstart_connecting.htm
    """

    access_token: str = Field(min_length=1)
    instance_url: str = Field(pattern=r"^https://[^/\s]+/?$")


class TokenError(_Answer):
    """The token endpoint's error: `{"error": "invalid_grant", "error_description": "authentication failure"}`."""

    error: str = ""
    error_description: str = ""


class SaveResult(_Answer):
    """Create (`POST /sobjects/{type}`) and upsert (`PATCH /sobjects/{type}/{field}/{value}`) answer
    `{"id", "success", "errors", "created"}`; `created` is absent on create and before API version 46.0.

    https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
    """

    id: str = Field(min_length=1)
    created: bool | None = None


class Record(_Answer):
    """A record as SOQL or a duplicate match returns it: `{"attributes": {"type", "url"}, "Id": ...}`."""

    id: str = Field(alias="Id", min_length=1)
    attributes: dict[str, Any] = Field(default_factory=dict)
    description: str | None = Field(None, alias="Description")  # only when selected; PHI, never logged

    @property
    def sobject_type(self) -> str | None:
        value = self.attributes.get("type")
        return value if isinstance(value, str) else None


class QueryPage(_Answer):
    """`GET /query?q=...` answers `{"totalSize", "done", "records": [...], "nextRecordsUrl"?}`.

    https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm
    """

    total_size: int = Field(alias="totalSize", default=0)
    done: bool = True
    records: list[Record] = Field(default_factory=list)


class MatchRecord(_Answer):
    record: Record | None = None


class MatchResult(_Answer):
    entity_type: str | None = Field(alias="entityType", default=None)
    match_records: list[MatchRecord] = Field(alias="matchRecords", default_factory=list)


class DuplicateResult(_Answer):
    """`duplicateResult` on a DUPLICATES_DETECTED error: `{"allowSave", "duplicateRule",
    "duplicateRuleEntityType", "errorMessage", "matchResults": [{"entityType", "matchRecords": [{"record":
    {"attributes", "Id"}, "matchConfidence", ...}], "rule", ...}]}`.

    https://developer.salesforce.com/docs/platform/api/guide/sforce-api-objects-duplicateerror.html and
    .../sforce-api-objects-matchresult.html; the REST JSON as captured in georgebv/aiosalesforce's
    tests/test_exceptions.py.
    """

    duplicate_rule: str | None = Field(alias="duplicateRule", default=None)
    match_results: list[MatchResult] = Field(alias="matchResults", default_factory=list)

    def record_ids(self, sobject_type: str) -> list[str]:
        """Ids of the matched records of `sobject_type`: a Lead rule may also match Contacts."""
        ids: list[str] = []
        for result in self.match_results:
            for match in result.match_records:
                record = match.record
                if record is None:
                    continue
                if (record.sobject_type or result.entity_type) == sobject_type and record.id not in ids:
                    ids.append(record.id)
        return ids


class ApiError(_Answer):
    """One entry of the REST error list `[{"message", "errorCode", "fields"}]`.

    `message` may echo submitted values: read it only to look for a field name, never to show it.
    https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
    """

    error_code: str = Field(alias="errorCode", default="")
    message: str = ""
    fields: list[str] = Field(default_factory=list)
    duplicate_result: DuplicateResult | None = Field(alias="duplicateResult", default=None)


_API_ERRORS: TypeAdapter[list[ApiError]] = TypeAdapter(list[ApiError])
Answer = TypeVar("Answer", bound=BaseModel)


def read_answer(model: type[Answer], payload: Any, where: str) -> Answer:
    try:
        return model.model_validate(payload)
    except ValidationError:
        # Not chained: a pydantic error quotes the input it rejected.
        raise ServiceUnavailable(f"Salesforce answered {where} with a body we could not read; will retry") from None


def error_list(response: requests.Response) -> list[ApiError]:
    """The REST error list; a single error object is read as a list of one."""
    try:
        payload = response.json()
        return _API_ERRORS.validate_python(payload if isinstance(payload, list) else [payload])
    except ValueError:  # also pydantic's ValidationError
        return []


def error_codes(errors: list[ApiError]) -> list[str]:
    """The distinct errorCode values, in order; anything that does not look like a code is dropped."""
    return list(dict.fromkeys(error.error_code for error in errors if _CODE.fullmatch(error.error_code)))

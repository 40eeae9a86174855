"""Gravity Forms REST API v2, read-only: forms and entries, with Basic authentication (the API key pair).

Endpoints: https://docs.gravityforms.com/searching-and-getting-entries-with-the-rest-api-v2/ and
https://docs.gravityforms.com/getting-forms-with-the-rest-api-v2/; authentication:
https://docs.gravityforms.com/rest-api-v2-authentication/ (Basic over HTTPS with consumer key and secret).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from integrations.errors import InvalidRequest, ServiceUnavailable
from integrations.gravityforms.models import EntryMeta
from integrations.http import HttpService

log = logging.getLogger(__name__)

PAGE_SIZE = 50


class EntriesPage(BaseModel):
    """GET /forms/{id}/entries answers {"total_count": N, "entries": [...]}; total_count may be a string."""

    model_config = ConfigDict(extra="ignore")

    total_count: int = 0
    entries: list[dict[str, Any]]

    @field_validator("total_count", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.isdigit() else value


@dataclass(frozen=True)
class PolledEntry:
    entry: dict[str, Any]
    meta: EntryMeta


class GravityFormsClient(HttpService):
    """Reads one WordPress site's forms and entries."""

    service = "Gravity Forms"
    auth_hint = (
        "create a REST API v2 key with read access (Forms > Settings > REST API) and set the site's consumer key "
        "and secret"
    )

    def __init__(
        self,
        base_url: str,
        consumer_key: str,
        consumer_secret: str,
        *,
        timeout: float = 15.0,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(base_url.rstrip("/") + "/wp-json/gf/v2", timeout=timeout, session=session)
        self._auth = (consumer_key, consumer_secret)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("auth", self._auth)
        return super().request(method, path, **kwargs)

    def describe_error(self, response: requests.Response) -> str:
        """WordPress REST errors carry a `code` such as rest_forbidden; their `message` is left out."""
        try:
            code = response.json().get("code")
        except (ValueError, AttributeError):
            return ""
        return code if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) < 64 else ""

    def _read_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        response = self.request("GET", path, params=params)
        try:
            return response.json()
        except ValueError:
            # A maintenance page or a security plugin's HTML instead of the API: the site is not answering.
            raise ServiceUnavailable(
                f"Gravity Forms answered GET {path} with something that is not JSON (a maintenance or login page?); "
                "will retry"
            ) from None

    def get_form(self, form_id: str) -> dict[str, Any]:
        """GET /forms/{id}: the form object, as `admitflow forms add` takes it."""
        form = self._read_json(f"/forms/{form_id}")
        if not isinstance(form, dict) or "fields" not in form:
            raise InvalidRequest(f"Gravity Forms returned no form object for form {form_id}: check the form id")
        return form

    def entries_page(
        self, form_id: str, *, page: int, newest_first: bool, since: datetime | None = None
    ) -> EntriesPage:
        """One page of a form's active entries sorted by `date_created`.

        `since` narrows the search by day (`start_date` is read in the site's time zone, so callers keep a
        margin and filter exact times themselves).
        """
        params: dict[str, Any] = {
            "sorting[key]": "date_created",
            "sorting[direction]": "DESC" if newest_first else "ASC",
            "paging[page_size]": PAGE_SIZE,
            "paging[current_page]": page,
        }
        if since is not None:
            params["search"] = json.dumps({"start_date": since.strftime("%Y-%m-%d")})
        payload = self._read_json(f"/forms/{form_id}/entries", params)
        try:
            return EntriesPage.model_validate(payload)
        except ValidationError:
            raise ServiceUnavailable(
                f"Gravity Forms answered the entries of form {form_id} in an unexpected shape; will retry"
            ) from None

    def entries_since(self, form_id: str, cutoff: datetime) -> Iterator[PolledEntry]:
        """Entries created at or after `cutoff`, newest first, reading pages until one reaches past it.

        New entries arriving meanwhile shift later pages down, so an entry can be seen twice (harmless: storage
        is idempotent) but never skipped.
        """
        page = 1
        while True:
            batch = self.entries_page(form_id, page=page, newest_first=True)
            reached_cutoff = False
            for entry in batch.entries:
                try:
                    meta = EntryMeta.model_validate(entry)
                except ValidationError:
                    log.warning("Gravity Forms returned an entry of form %s without a numeric id; skipped", form_id)
                    continue
                if meta.date_created is not None and meta.date_created < cutoff:
                    reached_cutoff = True
                    continue
                yield PolledEntry(entry, meta)
            if reached_cutoff or len(batch.entries) < PAGE_SIZE:
                return
            page += 1

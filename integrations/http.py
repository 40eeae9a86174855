"""The HTTP base every REST client builds on: base URL, timeouts, and status codes mapped to our errors.

Retries are not done here: the worker retries at the task boundary, where the attempt is recorded.
"""

from __future__ import annotations

from typing import Any

import requests

from integrations.errors import (
    IntegrationError,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class HttpService:
    """A `requests.Session` bound to one service's base URL.

    `service` names the provider in error messages; `auth_hint` tells the operator how to fix bad credentials.
    """

    service = "service"
    auth_hint = "check its credentials"

    def __init__(self, base_url: str, *, timeout: float = 10.0, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}/{path.lstrip('/')}"
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.Timeout:
            raise ServiceUnavailable(f"{self.service} did not answer within {self.timeout:g}s; will retry") from None
        except requests.ConnectionError:
            raise ServiceUnavailable(f"could not connect to {self.service}; will retry") from None
        self.raise_for_response(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServiceUnavailable(
                f"{self.service} answered {response.status_code} with a body that is not JSON; will retry",
                status=response.status_code,
            ) from None

    def describe_error(self, response: requests.Response) -> str:
        """A short, PHI-free detail from an error body (a category or code), or ''."""
        return ""

    def raise_for_response(self, response: requests.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        detail = self.describe_error(response)
        suffix = f" ({detail})" if detail else ""
        where = f"{response.request.method} {_path_of(response.request.url)}"
        if status in (401, 403):
            raise Unauthorized(f"{self.service} refused the credentials ({status}) on {where}: {self.auth_hint}",
                               status=status)
        if status == 404:
            raise NotFound(f"{self.service} found no such object ({where}){suffix}")
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RateLimited(f"{self.service} rate limit hit on {where}; will retry", retry_after=retry_after)
        if status >= 500:
            raise ServiceUnavailable(f"{self.service} failed with {status} on {where}; will retry", status=status)
        if status in (400, 409, 422):
            raise InvalidRequest(f"{self.service} rejected {where} ({status}){suffix}", status=status)
        raise IntegrationError(f"{self.service} answered {status} on {where}{suffix}", status=status)


def _path_of(url: str | None) -> str:
    """The URL's path only: query strings can carry search terms (emails, phones)."""
    if not url:
        return "?"
    without_query = url.split("?", 1)[0]
    parts = without_query.split("/", 3)
    return "/" + parts[3] if len(parts) > 3 else "/"

"""One error family for every external service.

Messages are written for the operator who reads them in the outbox list or a log line: what happened and what
to do. They never carry request or response bodies, because those hold PHI.
"""

from __future__ import annotations


class IntegrationError(Exception):
    """A call to an external service failed.

    `permanent` errors will fail the same way if retried (bad credentials, invalid data); the worker parks them
    instead of retrying. Everything else is retried with backoff.
    """

    def __init__(self, message: str, *, permanent: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status = status


class Unauthorized(IntegrationError):
    def __init__(self, message: str, *, status: int | None = 401) -> None:
        super().__init__(message, permanent=True, status=status)


class NotFound(IntegrationError):
    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True, status=404)


class Conflict(IntegrationError):
    def __init__(self, message: str, *, existing_id: str | None = None) -> None:
        super().__init__(message, permanent=True, status=409)
        self.existing_id = existing_id


class InvalidRequest(IntegrationError):
    def __init__(self, message: str, *, status: int | None = 400) -> None:
        super().__init__(message, permanent=True, status=status)


class RateLimited(IntegrationError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, permanent=False, status=429)
        self.retry_after = retry_after


class ServiceUnavailable(IntegrationError):
    """5xx, timeouts and connection failures: the service may answer later."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, permanent=False, status=status)

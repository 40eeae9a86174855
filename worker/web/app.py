"""The HTTP intake: verify the sender, store the entry, hand it on, answer fast.

Nothing here parses a person's details: that happens in the worker, after the entry is safely stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError, StatementError

from config.logging import configure_logging
from config.settings import Settings, get_settings
from config.sites import SiteConfig, load_sites, site_named
from worker.delivery.dispatch import Dispatcher, dispatcher_for
from worker.intake.entries import RejectedEntry, StoredEntry, form_registered, store_entry
from worker.intake.webhook_signing import SignatureRejected, record_delivery
from worker.intake.webhook_signing import verify as verify_signature
from worker.ops.readiness import CONFIGURATION_ERRORS, configuration_cause, health_checks
from worker.ops.rejections import FLUSH_SECONDS, Rejections
from worker.ops.status_page import observability_router
from worker.staff.services import Services, default_services
from worker.store.db import POOL_SIZE, get_engine, utcnow
from worker.store.models import SubmissionSource
from worker.store.schema import head_revision, known_revisions
from worker.web.handoff import Handoff
from worker.web.phone_line_hooks import phone_line_router
from worker.web.twilio_hooks import TwilioDoor, twilio_router

log = logging.getLogger(__name__)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _store(site: str, entry: dict[str, Any], registered: set[tuple[str, str]]) -> tuple[StoredEntry, bool]:
    """Store the entry; the second value says whether its form is registered. A form once registered stays so:
    `registered` remembers those this process has seen, which saves a query on nearly every webhook."""
    # A connection, not an ORM session: one INSERT needs no unit of work, and a webhook is the hottest path.
    with get_engine().begin() as connection:
        stored = store_entry(connection, site=site, entry=entry, source=SubmissionSource.WEBHOOK)
        form = (site, str(entry["form_id"]).strip())  # an entry, validated by store_entry
        form_known = form in registered or form_registered(connection, *form)
    if form_known:
        registered.add(form)
    return stored, form_known


# What a refused Gravity Forms webhook is counted as, by the answer's status (401 and 409 can also come from a
# signature: see `accept`).
REASONS = {400: "not_json", 401: "bad_secret", 404: "unknown_site", 413: "too_large", 422: "invalid_entry",
           503: "storage_unavailable"}


def served_app() -> FastAPI:
    """The app as each process of `admitflow web --workers N` builds it, logging set up as in the parent."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or get_settings()
    services = services or default_services()
    dispatcher: Dispatcher = dispatcher_for(settings, services)
    sites = load_sites(settings)
    for site in sites:
        if not site.webhook_secret and not site.signing_secret:
            log.error("site %s has no webhook secret: its webhooks are refused with 401 until one is set", site.name)
    rejections = Rejections()
    registered: set[tuple[str, str]] = set()
    # With a broker, one thread hands stored entries on in pages; without one, the work runs inline after the answer.
    handoff = Handoff(dispatcher) if settings.uses_broker else None
    # The migrations this version knows cannot change while it runs: read them once, not on every health check.
    head, known = head_revision(settings.database_url), known_revisions(settings.database_url)

    async def record_rejections() -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await run_in_threadpool(rejections.flush)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Every request's database work runs in this thread pool: one thread per pooled connection.
        to_thread.current_default_thread_limiter().total_tokens = POOL_SIZE
        # What is loaded by now lives as long as the process: keep it out of the collector's full passes, which
        # otherwise walk every module's objects and stall requests for tens of milliseconds.
        gc.collect()
        gc.freeze()
        recorder = asyncio.create_task(record_rejections())
        if handoff:
            handoff.start()
        yield
        if handoff:
            await run_in_threadpool(handoff.stop)
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
        await run_in_threadpool(rejections.flush)

    app = FastAPI(title="admitflow intake", version="0.1.0", lifespan=lifespan)
    app.state.rejections = rejections

    async def misconfigured(request: Request, exc: Exception) -> JSONResponse:
        """A configuration problem found while answering (start-up checks catch them first): one log line, and a
        503 the sender retries, never a 500 and a lost entry."""
        cause = configuration_cause(exc)
        if cause is None:
            raise exc
        log.error("cannot answer %s %s: %s", request.method, request.url.path, cause)
        if request.url.path.startswith("/hooks/gravityforms"):
            rejections.refused("gravityforms", 503, "misconfigured", "admitflow is misconfigured")
        return _error(503, "admitflow is misconfigured; retry later")

    for error in (*CONFIGURATION_ERRORS, StatementError):
        app.add_exception_handler(error, misconfigured)

    def refuse(site: str, status: int, message: str, reason: str | None = None) -> JSONResponse:
        rejections.refused("gravityforms", status, reason or REASONS[status], f"site {site}: {message}")
        return _error(status, message)

    @app.post("/hooks/gravityforms", status_code=202)
    async def gravityforms_webhook(request: Request, background: BackgroundTasks) -> JSONResponse:
        """Accept one Gravity Forms entry for the first configured site (Webhooks add-on, 'All Fields', JSON)."""
        return await accept(sites[0], request, background)

    @app.post("/hooks/gravityforms/{site_name}", status_code=202)
    async def gravityforms_site_webhook(site_name: str, request: Request, background: BackgroundTasks) -> JSONResponse:
        """Accept one Gravity Forms entry for the named site."""
        site = site_named(sites, site_name)
        if site is None:
            rejections.refused("gravityforms", 404, REASONS[404], "no such site")
            return _error(404, "no such site")
        return await accept(site, request, background)

    async def accept(site: SiteConfig, request: Request, background: BackgroundTasks) -> JSONResponse:
        if not site.signing_secret:
            secret = (site.webhook_secret or "").encode()
            presented = request.headers.get(settings.webhook_secret_header, "").encode()
            if not secret or not hmac.compare_digest(presented, secret):
                return refuse(site.name, 401, f"missing or wrong {settings.webhook_secret_header} header")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.max_body_bytes:
            return refuse(site.name, 413, f"body over {settings.max_body_bytes} bytes")
        body = await request.body()
        if len(body) > settings.max_body_bytes:
            return refuse(site.name, 413, f"body over {settings.max_body_bytes} bytes")
        if site.signing_secret:
            # Standard Webhooks: verify before parsing, then refuse a webhook-id already seen.
            try:
                delivery = verify_signature(site.signing_secret, request.headers, body, utcnow())
                await run_in_threadpool(record_delivery, site.name, delivery.webhook_id, utcnow())
            except SignatureRejected as exc:
                return refuse(site.name, exc.status, str(exc), "replayed" if exc.status == 409 else "bad_signature")
            except OperationalError:
                log.error("webhook could not record a delivery id: the database is unreachable")
                return refuse(site.name, 503, "storage unavailable; retry later")
        try:
            entry = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            return refuse(site.name, 400, "body is not UTF-8 text")
        except json.JSONDecodeError as exc:
            return refuse(site.name, 400,
                          f"body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
        except RecursionError:
            return refuse(site.name, 400, "body is nested too deeply")
        try:
            stored, form_known = await run_in_threadpool(_store, site.name, entry, registered)
        except RejectedEntry as exc:  # refused before any statement: the entry is validated first
            return refuse(site.name, 422, str(exc))
        except OperationalError:
            log.error("webhook could not store an entry: the database is unreachable")
            return refuse(site.name, 503, "storage unavailable; retry later")
        if stored.created and handoff:
            handoff.stored(stored.submission_id)
        elif stored.created:
            background.add_task(dispatcher.submission_stored, stored.submission_id)
        if not form_known:
            rejections.refused("gravityforms", 422, "unknown_form",
                               f"site {site.name}: form {entry['form_id']} is not registered; the entry was kept")
            return JSONResponse(
                {
                    "error": f"form {entry['form_id']} is not registered for this site; the entry was kept and is "
                    "processed once the form is registered (admitflow forms add)",
                    "submission": stored.submission_id,
                },
                status_code=422,
                background=background,
            )
        state = "accepted" if stored.created else "already received"
        return JSONResponse(
            {"status": state, "submission": stored.submission_id}, status_code=202, background=background
        )

    # Routes are matched in the order they were added: the webhook, nearly every request, is tried first.
    door = TwilioDoor(settings, dispatcher, rejections)
    app.include_router(twilio_router(settings, services, door))
    app.include_router(phone_line_router(services, door))
    app.include_router(observability_router(settings))

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Each dependency and whether the stack can take a lead (503 if not), for load balancers, compose and
        `admitflow health web`. `accepting_webhooks` says whether this process can store a webhook right now."""
        health = await run_in_threadpool(health_checks, settings, sites, head, known, utcnow())
        return JSONResponse(
            {"status": "ready" if health.ready else "not ready", "accepting_webhooks": health.accepting_webhooks,
             "checks": {check.name: {"ok": check.ok, "detail": check.line()} for check in health.checks}},
            status_code=200 if health.ready else 503,
        )

    return app


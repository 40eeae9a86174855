"""The HTTP intake: verify the sender, store the entry, hand it on, answer fast.

Nothing here parses a person's details: that happens in the worker, after the entry is safely stored.
"""

from __future__ import annotations

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
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from config.logging import configure_logging
from config.settings import Settings, get_settings
from config.sites import SiteConfig, load_sites, site_named
from worker.delivery.dispatch import Dispatcher, dispatcher_for
from worker.intake.entries import RejectedEntry, StoredEntry, entry_meta, form_registered, store_entry
from worker.intake.webhook_signing import SignatureRejected, record_delivery
from worker.intake.webhook_signing import verify as verify_signature
from worker.ops.status_page import observability_router
from worker.staff.services import Services, default_services
from worker.store.db import POOL_SIZE, session_scope, utcnow
from worker.store.models import SubmissionSource
from worker.web.phone_line_hooks import phone_line_router
from worker.web.twilio_hooks import TwilioDoor, twilio_router

log = logging.getLogger(__name__)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _store(site: str, entry: dict[str, Any]) -> tuple[StoredEntry, bool]:
    """Store the entry; the second value says whether its form is registered."""
    with session_scope() as session:
        stored = store_entry(session, site=site, entry=entry, source=SubmissionSource.WEBHOOK)
        form_known = form_registered(session, site, str(entry["form_id"]).strip())
    return stored, form_known


def _check_database() -> None:
    with session_scope() as session:
        session.execute(text("SELECT 1"))


def _check_broker(url: str) -> None:
    from kombu import Connection  # type: ignore[attr-defined]

    with Connection(url, connect_timeout=2) as connection:  # type: ignore[no-untyped-call]
        connection.ensure_connection(max_retries=1)


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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Every request's database work runs in this thread pool: one thread per pooled connection.
        to_thread.current_default_thread_limiter().total_tokens = POOL_SIZE
        # What is loaded by now lives as long as the process: keep it out of the collector's full passes, which
        # otherwise walk every module's objects and stall requests for tens of milliseconds.
        gc.collect()
        gc.freeze()
        yield

    app = FastAPI(title="admitflow intake", version="0.1.0", lifespan=lifespan)
    door = TwilioDoor(settings, dispatcher)
    app.include_router(twilio_router(settings, services, door))
    app.include_router(phone_line_router(services, door))
    app.include_router(observability_router(settings))

    @app.post("/hooks/gravityforms", status_code=202)
    async def gravityforms_webhook(request: Request, background: BackgroundTasks) -> JSONResponse:
        """Accept one Gravity Forms entry for the first configured site (Webhooks add-on, 'All Fields', JSON)."""
        return await accept(sites[0], request, background)

    @app.post("/hooks/gravityforms/{site_name}", status_code=202)
    async def gravityforms_site_webhook(site_name: str, request: Request, background: BackgroundTasks) -> JSONResponse:
        """Accept one Gravity Forms entry for the named site."""
        site = site_named(sites, site_name)
        if site is None:
            return _error(404, "no such site")
        return await accept(site, request, background)

    async def accept(site: SiteConfig, request: Request, background: BackgroundTasks) -> JSONResponse:
        if not site.signing_secret:
            secret = (site.webhook_secret or "").encode()
            presented = request.headers.get(settings.webhook_secret_header, "").encode()
            if not secret or not hmac.compare_digest(presented, secret):
                return _error(401, f"missing or wrong {settings.webhook_secret_header} header")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.max_body_bytes:
            return _error(413, f"body over {settings.max_body_bytes} bytes")
        body = await request.body()
        if len(body) > settings.max_body_bytes:
            return _error(413, f"body over {settings.max_body_bytes} bytes")
        if site.signing_secret:
            # Standard Webhooks: verify before parsing, then refuse a webhook-id already seen.
            try:
                delivery = verify_signature(site.signing_secret, request.headers, body, utcnow())
                await run_in_threadpool(record_delivery, site.name, delivery.webhook_id, utcnow())
            except SignatureRejected as exc:
                return _error(exc.status, str(exc))
            except OperationalError:
                log.error("webhook could not record a delivery id: the database is unreachable")
                return _error(503, "storage unavailable; retry later")
        try:
            entry = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            return _error(400, "body is not UTF-8 text")
        except json.JSONDecodeError as exc:
            return _error(400, f"body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
        except RecursionError:
            return _error(400, "body is nested too deeply")
        try:
            entry_meta(entry)
        except RejectedEntry as exc:
            return _error(422, str(exc))
        try:
            stored, form_known = await run_in_threadpool(_store, site.name, entry)
        except OperationalError:
            log.error("webhook could not store an entry: the database is unreachable")
            return _error(503, "storage unavailable; retry later")
        if stored.created:
            # Handed on after the response: the entry is committed, and the sweeper re-sends one whose task
            # message never reached the broker.
            background.add_task(dispatcher.submission_stored, stored.submission_id)
        if not form_known:
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

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Database and broker reachability, for load balancers and compose health checks."""
        checks: dict[str, str] = {}
        try:
            await run_in_threadpool(_check_database)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable ({type(exc).__name__})"
        if settings.uses_broker:
            try:
                await run_in_threadpool(_check_broker, settings.celery_broker_url)
                checks["broker"] = "ok"
            except Exception as exc:
                checks["broker"] = f"unreachable ({type(exc).__name__})"
        else:
            checks["broker"] = "none (work runs inline)"
        healthy = all(value == "ok" or value.startswith("none") for value in checks.values())
        return JSONResponse({"status": "ok" if healthy else "degraded", **checks},
                            status_code=200 if healthy else 503)

    return app


"""Can this stack take a lead? The checks `admitflow web|worker|beat` run before they start, /healthz answers with,
and `admitflow doctor` begins with. Each says what it found and, when it failed, what to do; none prints a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Text, select, text, type_coerce
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config.settings import Settings
from config.sites import SiteConfig, SitesError, load_sites
from worker.ops.liveness import heartbeat_age
from worker.staff.roster import RosterError
from worker.staff.services import CrmConfigurationError, default_services
from worker.staff.templates import TemplateError
from worker.store.db import session_scope
from worker.store.models import Lead, Submission
from worker.store.phi import (
    KeyConfigurationError,
    PhiVault,
    UndecryptableValue,
    current_vault,
    load_vault,
    use_vault,
)
from worker.store.schema import SchemaOutOfDate, ensure_schema, schema_state

Door = Literal["web", "worker", "beat"]


class NotReady(RuntimeError):
    """A door cannot start as configured; the message names the setting and the fix, on one line."""


# Misconfiguration an operator fixes from the message: one line, never a traceback or a 500.
CONFIGURATION_ERRORS = (
    CrmConfigurationError, KeyConfigurationError, NotReady, RosterError, SchemaOutOfDate, SitesError, TemplateError,
    UndecryptableValue,
)
# What a process needs to store a webhook; the rest (broker, beat) is what the stack needs to act on it.
INTAKE_CHECKS = frozenset({"database", "schema", "keys", "webhook_secret"})


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False  # nothing to check: the thing is not configured (e.g. a log-only CRM)

    def line(self) -> str:
        return f"{self.detail}: {self.fix}" if self.fix else self.detail


def newest_token(session: Session) -> str | None:
    """The most recently stored encrypted value (the newest entry), as stored."""
    return session.scalar(select(type_coerce(Submission.payload, Text)).order_by(Submission.id.desc()).limit(1))


def stored_values_check(session: Session, vault: PhiVault) -> Check:
    """The newest stored entry opens with the configured keys, and the newest lead's dedup digest was made with a
    configured blind-index key: otherwise nothing stored can be read, and returning people become new leads."""
    token = newest_token(session)
    if token is not None:
        try:
            vault.decrypt(token)
        except UndecryptableValue as exc:
            return Check("keys", False, str(exc))
    row = session.execute(
        select(type_coerce(Lead.phone, Text), Lead.phone_index, type_coerce(Lead.email, Text), Lead.email_index)
        .where((Lead.phone_index.is_not(None)) | (Lead.email_index.is_not(None)))
        .order_by(Lead.id.desc()).limit(1)
    ).first()
    if row is not None:
        kind, value, digest = ("phone", row[0], row[1]) if row[1] is not None else ("email", row[2], row[3])
        try:
            plain = vault.decrypt(value) if value is not None else None
        except UndecryptableValue as exc:
            return Check("keys", False, str(exc))
        if plain is not None and digest not in vault.blind_indexes(kind, plain):
            ids = ", ".join(vault.index_key_ids)
            return Check(
                "keys", False,
                f"ADMITFLOW_BLIND_INDEX_KEY ({ids}) is not the key the stored dedup digests were made with, so "
                "returning people would become new leads",
                "restore the previous key and list it after the new one until `admitflow keys rotate` has run",
            )
    return Check("keys", True, f"encryption key {vault.primary_id}, blind-index key {vault.index_key_ids[0]}")


def webhook_secrets_check(sites: list[SiteConfig]) -> Check:
    missing = [site.name for site in sites if not (site.webhook_secret or site.signing_secret)]
    if missing:
        return Check(
            "webhook_secret", False,
            f"site {', '.join(missing)} has no webhook secret, so every webhook would be refused (401)",
            "set GRAVITYFORMS_WEBHOOK_SECRET (or the site's webhook_secret_env in SITES_FILE) to a long random "
            "string, and the same value in the Gravity Forms feed's header",
        )
    return Check("webhook_secret", True, "set for " + ", ".join(site.name for site in sites))


def broker_check(settings: Settings) -> Check:
    if not settings.uses_broker:
        return Check("broker", True, "none: work runs inline in the process that receives it")
    from kombu import Connection  # type: ignore[attr-defined]

    try:
        with Connection(settings.celery_broker_url, connect_timeout=2) as connection:  # type: ignore[no-untyped-call]
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        return Check("broker", False, f"the broker is unreachable ({type(exc).__name__})",
                     "check CELERY_BROKER_URL and that Redis is running")
    return Check("broker", True, "reachable")


def beat_check(session: Session, settings: Settings, now: datetime) -> Check:
    if not settings.uses_broker:
        return Check("beat", True, "none: no broker (run `admitflow poll run` from cron to poll)")
    age = heartbeat_age(session, now)
    limit = settings.heartbeat_max_age_seconds
    fix = "start `admitflow beat` (and a worker: the heartbeat is a task beat sends and a worker runs)"
    if age is None:
        return Check("beat", False, "no heartbeat yet", fix)
    if age > limit:
        return Check("beat", False, f"last heartbeat {age:.0f} s ago (more than {limit:g} s)", fix)
    return Check("beat", True, f"last heartbeat {age:.0f} s ago")


@dataclass(frozen=True)
class Health:
    checks: list[Check]

    @property
    def ready(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def accepting_webhooks(self) -> bool:
        return all(check.ok for check in self.checks if check.name in INTAKE_CHECKS)

    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]


def health_checks(
    settings: Settings, sites: list[SiteConfig], head: str, known: frozenset[str], now: datetime
) -> Health:
    """Every dependency of a running stack, cheaply (/healthz is polled): a few indexed reads and a broker ping."""
    checks: list[Check] = []
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
            checks.append(Check("database", True, "reachable"))
            state = schema_state(settings, head, known)
            checks.append(Check("schema", state.usable, state.describe()))
            if state.usable:
                checks.append(stored_values_check(session, current_vault()))
                checks.append(beat_check(session, settings, now))
    except (SQLAlchemyError, KeyConfigurationError) as exc:
        name = "keys" if isinstance(exc, KeyConfigurationError) else "database"
        detail = str(exc) if name == "keys" else f"unreachable or failing ({type(exc).__name__})"
        checks = [check for check in checks if check.name != name] + [Check(name, False, detail)]
    checked = {check.name for check in checks}
    checks += [Check(name, False, "not checked: the database is not usable")
               for name in ("database", "schema", "keys", "beat") if name not in checked]
    checks += [webhook_secrets_check(sites), broker_check(settings)]
    order = ("database", "schema", "keys", "webhook_secret", "broker", "beat")
    return Health(sorted(checks, key=lambda check: order.index(check.name)))


def _require_broker(settings: Settings, door: Door) -> None:
    if not settings.uses_broker:
        raise NotReady(
            f"CELERY_BROKER_URL is not set: `admitflow {door}` needs a broker (e.g. redis://localhost:6379/0); "
            "without one, `admitflow web` and `admitflow ingest` do the work inline"
        )


def open_keys(settings: Settings) -> None:
    """Load the keys, check them against what is stored, and make them this process's keys."""
    vault = load_vault(settings)
    with session_scope() as session:
        check = stored_values_check(session, vault)
    if not check.ok:
        raise NotReady(check.line())
    use_vault(vault)


def preflight(settings: Settings, door: Door) -> None:
    """Refuse to start a door that could not do its work: raises `NotReady` (or the configuration error that says
    what to fix, or the database's error) before the door takes anything in."""
    if settings.environment == "production":
        load_vault(settings)  # keys from the environment, before anything else is looked at
    sites = load_sites(settings)
    if door in ("worker", "beat"):
        _require_broker(settings, door)
    ensure_schema(settings)
    open_keys(settings)
    if door == "beat":
        return
    default_services()  # roster, alert templates and the CRM's credentials
    if door == "web":
        secrets = webhook_secrets_check(sites)
        if not secrets.ok:
            raise NotReady(secrets.line())
        if settings.environment == "production" and settings.twilio_configured and settings.public_url is None:
            raise NotReady(
                "ADMITFLOW_PUBLIC_URL is not set, so staff replies and Twilio's callbacks would be refused (403): set "
                "it to the https address Twilio reaches admitflow at"
            )

"""`admitflow doctor`: everything an operator set up, checked in one run after filling .env.

Settings, sites, roster and alert templates; the database, its migrations and the PHI keys (by fingerprint, never
value, against what is stored); the broker and beat's heartbeat; the webhook secrets; then one real, read-only call
to each configured service (worker/ops/vendor_checks.py). Each line says what was found and, on failure, the fix.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config.settings import Settings
from config.sites import SiteConfig, SitesError, load_sites
from worker.ops.readiness import (
    Check,
    beat_check,
    broker_check,
    stored_values_check,
    webhook_secrets_check,
)
from worker.ops.vendor_checks import crm_checks, gravity_forms_checks, twilio_check
from worker.staff.roster import Roster, RosterError, load_roster
from worker.staff.services import CrmConfigurationError, chosen_backend, crm_from_settings
from worker.staff.templates import AlertTemplates, TemplateError
from worker.store.db import session_scope
from worker.store.failures import database_problem, safe_url
from worker.store.phi import KEY_ID_SEPARATOR, KeyConfigurationError, PhiVault, load_vault, uses_local_key_file
from worker.store.schema import schema_state
from worker.trust.key_rotation import encrypted_columns


def doctor(settings: Settings, now: datetime) -> list[Check]:
    """Every check, in the order an operator would fix them."""
    checks: list[Check] = []
    sites = _sites(settings, checks)
    roster = _roster(settings, checks)
    checks.append(_templates(settings))
    checks.append(_crm_configuration(settings, sites))
    checks += _store(settings, now)
    checks.append(broker_check(settings))
    if sites:
        checks.append(webhook_secrets_check(sites))
        checks += gravity_forms_checks(settings, sites)
    checks += crm_checks(settings, sites, roster)
    checks.append(twilio_check(settings))
    return checks


def _sites(settings: Settings, checks: list[Check]) -> list[SiteConfig]:
    try:
        sites = load_sites(settings)
    except SitesError as exc:
        checks.append(Check("sites", False, str(exc)))
        return []
    source = f"SITES_FILE {settings.sites_file}" if settings.sites_file else "the GRAVITYFORMS_* settings"
    described = "; ".join(f"{site.name} (forms {', '.join(form.id for form in site.forms) or 'none polled'})"
                          for site in sites)
    checks.append(Check("sites", True, f"{described}, from {source}"))
    return sites


def _roster(settings: Settings, checks: list[Check]) -> Roster | None:
    try:
        roster = load_roster(settings.roster_file, ZoneInfo(settings.center_timezone))
    except RosterError as exc:
        checks.append(Check("roster", False, str(exc)))
        return None
    checks.append(Check("roster", True, f"{len(roster.staff)} staff, {len(roster.shifts)} shifts, from "
                                        f"{settings.roster_file}"))
    return roster


def _templates(settings: Settings) -> Check:
    try:
        AlertTemplates.from_settings(settings)
    except TemplateError as exc:
        return Check("templates", False, str(exc))
    return Check("templates", True, "staff texts and the spoken reminder are valid")


def _crm_configuration(settings: Settings, sites: list[SiteConfig]) -> Check:
    backends = sorted({chosen_backend(settings)} | {chosen_backend(settings, site.crm) for site in sites})
    try:
        for backend in backends:
            crm_from_settings(settings, backend)
    except (CrmConfigurationError, ValueError) as exc:
        return Check("crm", False, str(exc))
    return Check("crm", True, ", ".join("log-only (leads are logged, not pushed)" if backend == "log" else backend
                                         for backend in backends))


def _store(settings: Settings, now: datetime) -> list[Check]:
    """The database, its schema, the keys against what is stored, and beat's heartbeat."""
    vault: PhiVault | None = None
    try:
        vault = load_vault(settings)
        keys = _key_fingerprints(settings, vault)
    except KeyConfigurationError as exc:
        keys = Check("keys", False, str(exc))
    try:
        with session_scope() as session:
            state = schema_state(settings)
            checks = [Check("database", True, safe_url(settings.database_url)),
                      Check("schema", state.usable, state.describe())]
            if not state.usable:
                return [*checks, keys]
            if vault is not None:
                keys = _stored_keys(session, vault, keys)
            return [*checks, keys, beat_check(session, settings, now)]
    except SQLAlchemyError as exc:
        return [Check("database", False, database_problem(exc, settings.database_url)), keys]


def _key_fingerprints(settings: Settings, vault: PhiVault) -> Check:
    source = f"the key file {settings.key_file}" if uses_local_key_file(settings) else "the environment"
    return Check("keys", True, f"encryption keys {', '.join(vault.key_ids)} (newest first), blind-index keys "
                               f"{', '.join(vault.index_key_ids)}, from {source}")


def stored_key_ids(session: Session) -> Counter[str | None]:
    """How many stored PHI values each encryption key id encrypted (None: written before ids were stored)."""
    counts: Counter[str | None] = Counter()
    for table, names in encrypted_columns():
        for name in names:
            column = table.c[name]
            kid = case((func.substr(column, 9, 1) == KEY_ID_SEPARATOR, func.substr(column, 1, 8)), else_=None)
            for key, count in session.execute(select(kid, func.count()).where(column.is_not(None)).group_by(kid)):
                counts[key] += count
    return counts


def _stored_keys(session: Session, vault: PhiVault, fingerprints: Check) -> Check:
    counts = stored_key_ids(session)
    missing = sorted(kid for kid in counts if kid is not None and kid not in vault.by_id)
    if missing:
        needed = ", ".join(f"{kid} ({counts[kid]} values)" for kid in missing)
        return Check("keys", False, f"{fingerprints.detail}; stored PHI needs keys that are not configured: {needed}",
                     f"{vault.restore_hint}, and list them in ADMITFLOW_ENCRYPTION_KEYS after the newest key")
    newest = stored_values_check(session, vault)
    if not newest.ok:
        return Check("keys", False, f"{fingerprints.detail}; {newest.detail}", newest.fix)
    used = ", ".join(f"{counts[kid]} under {kid}" for kid in sorted(counts, key=str) if kid is not None)
    legacy = f"; {counts[None]} from before key ids (`admitflow keys rotate` tags them)" if counts[None] else ""
    return Check("keys", True, f"{fingerprints.detail}; stored values: {used or 'none yet'}{legacy}")

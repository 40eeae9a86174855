"""What every `admitflow` command shares: its settings and logging, JSON files, and errors shown as one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from config.logging import configure_logging
from config.settings import Settings, get_settings
from config.sites import SitesError
from worker.staff.roster import RosterError
from worker.staff.services import CrmConfigurationError
from worker.staff.templates import TemplateError
from worker.store.phi import KeyConfigurationError
from worker.store.schema import SchemaOutOfDate


def command_settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_entries(path: Path) -> list[Any]:
    """A JSON array of entries, the REST API's {"entries": [...]} answer, or JSON lines."""
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise click.ClickException(f"{path} line {number} is not valid JSON ({exc.msg})") from None
        return entries
    if isinstance(document, dict) and isinstance(document.get("entries"), list):
        return list(document["entries"])
    if isinstance(document, list):
        return document
    return [document]


# Misconfiguration an operator fixes from the message: shown as one line, not a traceback.
CONFIGURATION_ERRORS = (
    CrmConfigurationError, KeyConfigurationError, RosterError, SchemaOutOfDate, SitesError, TemplateError,
)


class AdmitflowGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except CONFIGURATION_ERRORS as exc:
            raise click.ClickException(str(exc)) from None



def require_broker(settings: Settings) -> None:
    if not settings.uses_broker:
        raise click.ClickException(
            "CELERY_BROKER_URL is not set: the worker and beat need a broker (e.g. redis://localhost:6379/0); "
            "without one, `admitflow web` and `admitflow ingest` do the work inline"
        )



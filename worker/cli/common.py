"""What every `admitflow` command shares: its settings and logging, the database opened and checked, JSON files,
tables, and errors shown as one line with a meaningful exit code.

Exit codes: 0 done; 1 the command ran and found a problem (doctor or a health check failed, no such submission);
2 it could not run: a wrong option, or a setting, a key, the database or its schema that must be fixed first.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from config.logging import configure_logging
from config.settings import Settings, get_settings
from worker.ops.readiness import CONFIGURATION_ERRORS, open_keys
from worker.store.failures import database_problem
from worker.store.schema import ensure_schema

CANNOT_RUN = 2


class CannotRun(click.ClickException):
    """Nothing was done: something must be fixed first (the message says what)."""

    exit_code = CANNOT_RUN


def command_settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def open_store(settings: Settings) -> None:
    """The schema current (the embedded SQLite file migrates itself) and the PHI keys loaded and checked against
    what is stored, before any work: a wrong key says which one it needs instead of failing half way."""
    ensure_schema(settings)
    open_keys(settings)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str) -> None:
    """Rows under a header, in aligned columns (bold headers on a terminal); `empty` on stderr when there are none."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=None, pad_edge=False, header_style="bold", show_edge=False)
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    if not table.row_count:
        click.echo(empty, err=True)
        return
    terminal = sys.stdout.isatty()
    console = Console(force_terminal=terminal, no_color=not terminal, width=None if terminal else 10_000,
                      highlight=False, soft_wrap=False)
    with console.capture() as captured:
        console.print(table, overflow="ignore", crop=False)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


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


def _invalid_settings(exc: ValidationError) -> str:
    # Names and pydantic's reasons only: the rejected values may be secrets.
    problems = "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors())
    return f"invalid settings: {problems} (see .env.example)"


def _quiet_broken_pipe() -> None:
    """The reader went away (`| head`): stop without a traceback, and without Python's own complaint at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class AdmitflowGroup(click.Group):
    """Errors an operator fixes from the message are one line and exit 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except CONFIGURATION_ERRORS as exc:
            raise CannotRun(str(exc)) from None
        except ValidationError as exc:
            raise CannotRun(_invalid_settings(exc)) from None
        except SQLAlchemyError as exc:
            raise CannotRun(database_problem(exc, get_settings().database_url)) from None
        except BrokenPipeError:
            _quiet_broken_pipe()
            return None


def require_broker(settings: Settings) -> None:
    if not settings.uses_broker:
        raise CannotRun(
            "CELERY_BROKER_URL is not set: the worker and beat need a broker (e.g. redis://localhost:6379/0); "
            "without one, `admitflow web` and `admitflow ingest` do the work inline"
        )



"""Is it working? `admitflow health web|worker|beat` for container health checks (one line; exit 0 healthy, 1 not:
Docker reserves 2), and `admitflow doctor`, the checklist an operator runs after filling .env.
"""

from __future__ import annotations

import socket
import sys
from typing import NoReturn

import click
import requests

from worker.cli.common import command_settings
from worker.ops.readiness import Check, broker_check

DEFAULT_HEALTHZ = "http://127.0.0.1:8000/healthz"


def _verdict(healthy: bool, line: str) -> NoReturn:
    click.echo(line)
    sys.exit(0 if healthy else 1)


@click.group()
def health() -> None:
    """One-line health checks for containers and monitors: exit 0 when healthy, 1 when not."""


@health.command("web")
@click.option("--url", default=DEFAULT_HEALTHZ, show_default=True, help="The web server's /healthz.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for the answer.")
def health_web(url: str, timeout: float) -> None:
    """GET /healthz: healthy when it answers 200 (the stack can take a lead)."""
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        _verdict(False, f"web unhealthy: {url} did not answer ({type(exc).__name__})")
    try:
        checks = response.json()["checks"]
        failing = "; ".join(f"{name}: {check['detail']}" for name, check in checks.items() if not check["ok"])
    except (ValueError, KeyError, TypeError, AttributeError):
        failing = "its answer is not admitflow's /healthz"
    if response.status_code == 200:
        _verdict(True, f"web ready: {', '.join(checks)} ok")
    _verdict(False, f"web not ready ({response.status_code}): {failing}")


@health.command("worker")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for the answer.")
def health_worker(timeout: float) -> None:
    """Celery ping to the worker on this host (celery@HOSTNAME): healthy when it answers."""
    node = f"celery@{socket.gethostname()}"
    try:
        settings = command_settings()
        broker = broker_check(settings)
        if not settings.uses_broker or not broker.ok:
            _verdict(False, f"worker unhealthy: {broker.line() if settings.uses_broker else 'no broker is set'}")
        from config.celery_app import app

        replies = app.control.ping(destination=[node], timeout=timeout)
    except Exception as exc:  # a health check answers, whatever went wrong
        _verdict(False, f"worker unhealthy: could not ping {node} ({type(exc).__name__})")
    if any(node in reply for reply in replies):
        _verdict(True, f"worker {node} answered")
    _verdict(False, f"worker unhealthy: {node} did not answer within {timeout:g} s")


@health.command("beat")
@click.option("--max-age", type=float, default=None,
              help="Oldest acceptable heartbeat, seconds (default ADMITFLOW_HEARTBEAT_MAX_AGE_SECONDS, 90).")
def health_beat(max_age: float | None) -> None:
    """Healthy when beat's heartbeat row is younger than --max-age."""
    from worker.ops.liveness import heartbeat_age
    from worker.store.db import session_scope, utcnow

    try:
        settings = command_settings()
        limit = max_age if max_age is not None else settings.heartbeat_max_age_seconds
        with session_scope() as session:
            age = heartbeat_age(session, utcnow())
    except Exception as exc:  # a health check answers, whatever went wrong
        _verdict(False, f"beat unhealthy: could not read the heartbeat ({type(exc).__name__})")
    if age is None:
        _verdict(False, "beat unhealthy: no heartbeat yet (beat sends one at start and every "
                        f"{settings.heartbeat_seconds:g} s; a worker writes it)")
    if age > limit:
        _verdict(False, f"beat unhealthy: last heartbeat {age:.0f} s ago (more than {limit:g} s)")
    _verdict(True, f"beat alive: last heartbeat {age:.0f} s ago")


MARKS = {"ok": ("ok", "green"), "fail": ("FAIL", "red"), "skip": ("--", "yellow")}


def _mark(check: Check) -> str:
    return "skip" if check.skipped else "ok" if check.ok else "fail"


@click.command()
def doctor() -> None:
    """Check everything after filling .env: settings, database and migrations, broker, keys (fingerprints only),
    beat, webhook secrets, and a read-only call to each configured service. Exit 1 if anything failed."""
    from worker.ops.doctor import doctor as run_doctor
    from worker.store.db import utcnow

    settings = command_settings()
    checks = run_doctor(settings, utcnow())
    width = max(len(check.name) for check in checks)
    for check in checks:
        label, colour = MARKS[_mark(check)]
        click.echo(f"{click.style(f'{label:<4}', fg=colour, bold=True)}  {check.name:<{width}}  {check.detail}")
        if check.fix and not check.ok:
            click.echo(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    counts = {mark: sum(_mark(check) == mark for check in checks) for mark in MARKS}
    failed = counts["fail"]
    click.echo(f"{len(checks)} checks: {counts['ok']} ok, {failed} failed, {counts['skip']} not configured")
    sys.exit(1 if failed else 0)

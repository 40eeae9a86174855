"""Running the stack: migrate the schema, serve the HTTP intake, run a Celery worker or beat.

`web`, `worker` and `beat` check their configuration before they take anything in (worker/ops/readiness.py) and
refuse to start with one line naming the setting and the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from worker.cli.common import command_settings
from worker.ops.readiness import preflight
from worker.store.schema import schema_state, upgrade


@click.command()
def migrate() -> None:
    """Bring the database schema up to date (Alembic)."""
    settings = command_settings()
    before = schema_state(settings)
    logging.getLogger("alembic").setLevel(logging.INFO)
    upgrade(settings, before)
    if before.current:
        click.echo(f"database schema is up to date ({before.head}); nothing to do")
    else:
        click.echo(f"database schema migrated from {before.revision or 'empty'} to {before.head}")


@click.command()
@click.option("--host", default=None, help="Bind address (default ADMITFLOW_WEB_HOST).")
@click.option("--port", type=int, default=None, help="Port (default ADMITFLOW_WEB_PORT).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Server processes sharing the port (default ADMITFLOW_WEB_WORKERS).")
def web(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP intake: POST /hooks/gravityforms, GET /healthz."""
    import uvicorn

    from worker.web.app import create_app

    settings = command_settings()
    preflight(settings, "web")
    workers = workers or settings.web_workers
    # Several processes import the app by name and build it each (worker.web.app.served_app); one serves it from here.
    uvicorn.run("worker.web.app:served_app" if workers > 1 else create_app(settings), factory=workers > 1,
                workers=workers, host=host or settings.web_host, port=port or settings.web_port,
                log_level=settings.log_level.lower(), access_log=False, log_config=None)

@click.command()
@click.option("--concurrency", type=click.IntRange(1, 64), default=None,
              help="Pool processes (default ADMITFLOW_WORKER_CONCURRENCY).")
@click.option("--events/--no-events", default=False, show_default=True,
              help="Send task events (celery -E), for a monitor such as Flower.")
def worker(concurrency: int | None, events: bool) -> None:
    """Run a Celery worker."""
    settings = command_settings()
    preflight(settings, "worker")
    from config.celery_app import QUEUES_BY_PRIORITY, ROUTINE_TASKS, app
    from config.logging import quiet_routine_tasks

    quiet_routine_tasks(ROUTINE_TASKS)
    processes = concurrency or settings.worker_concurrency
    app.worker_main(["worker", "--loglevel", settings.log_level, "--concurrency", str(processes),
                     "--queues", ",".join(QUEUES_BY_PRIORITY), "--without-gossip", "--without-mingle",
                     *(["--task-events"] if events else [])])


@click.command()
@click.option("--schedule", type=click.Path(path_type=Path), default=None,
              help="Where beat keeps its last-run times (default: celerybeat-schedule in ADMITFLOW_HOME).")
def beat(schedule: Path | None) -> None:
    """Run Celery beat: the heartbeat, the sweeper that re-sends stalled work, polling and escalation timers."""
    settings = command_settings()
    preflight(settings, "beat")
    if schedule is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        schedule = settings.data_dir / "celerybeat-schedule"
    from config.celery_app import ROUTINE_TASKS, app
    from config.logging import quiet_routine_tasks

    quiet_routine_tasks(ROUTINE_TASKS)
    app.start(["beat", "--loglevel", settings.log_level, "--schedule", str(schedule)])

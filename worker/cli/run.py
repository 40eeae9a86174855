"""Running the stack: migrate the schema, serve the HTTP intake, run a Celery worker or beat."""

from __future__ import annotations

from pathlib import Path

import click

from worker.cli.common import command_settings, require_broker
from worker.store.schema import ensure_schema, upgrade


@click.command()
def migrate() -> None:
    """Bring the database schema up to date (Alembic)."""
    settings = command_settings()
    upgrade(settings)
    click.echo("database schema is up to date")


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
    ensure_schema(settings)
    workers = workers or settings.web_workers
    # Several processes import the app by name and build it each (worker.web.app.served_app); one serves it from here.
    uvicorn.run("worker.web.app:served_app" if workers > 1 else create_app(settings), factory=workers > 1,
                workers=workers, host=host or settings.web_host, port=port or settings.web_port,
                log_level=settings.log_level.lower(), access_log=False, log_config=None)

@click.command()
@click.option("--concurrency", type=int, default=2, show_default=True)
@click.option("--events/--no-events", default=False, show_default=True,
              help="Send task events (celery -E), for a monitor such as Flower.")
def worker(concurrency: int, events: bool) -> None:
    """Run a Celery worker."""
    settings = command_settings()
    require_broker(settings)
    ensure_schema(settings)
    from config.celery_app import app

    app.worker_main(["worker", "--loglevel", settings.log_level, "--concurrency", str(concurrency),
                     "--queues", "admitflow", "--without-gossip", "--without-mingle",
                     *(["--task-events"] if events else [])])


@click.command()
@click.option("--schedule", type=click.Path(path_type=Path), default=Path("celerybeat-schedule"),
              show_default=True, help="Where beat keeps its last-run times.")
def beat(schedule: Path) -> None:
    """Run Celery beat (the sweeper that re-sends stalled work)."""
    settings = command_settings()
    require_broker(settings)
    from config.celery_app import app

    app.start(["beat", "--loglevel", settings.log_level, "--schedule", str(schedule)])

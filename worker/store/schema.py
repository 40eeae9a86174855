"""Running the Alembic migrations from code (`admitflow migrate`, and the embedded default on start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from config.settings import Settings
from worker.store.db import engine_for

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaOutOfDate(RuntimeError):
    pass


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(settings: Settings) -> None:
    command.upgrade(alembic_config(settings.database_url), "head")


def is_current(settings: Settings) -> bool:
    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    with engine_for(settings.database_url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head


def ensure_schema(settings: Settings) -> None:
    """The embedded SQLite default migrates itself; a shared database is migrated by `admitflow migrate` only."""
    if settings.is_sqlite:
        upgrade(settings)
    elif not is_current(settings):
        raise SchemaOutOfDate("the database schema is not current: run `admitflow migrate` first")

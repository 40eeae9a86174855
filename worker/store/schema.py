"""Running the Alembic migrations from code (`admitflow migrate`, and the embedded default on start)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from config.settings import Settings
from worker.store.db import engine_for
from worker.store.phi import create_local_key_file

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaOutOfDate(RuntimeError):
    """The database is behind this version's migrations; the message says to run `admitflow migrate`."""


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchemaState:
    """The database's migration revision against the newest one this version knows."""

    revision: str | None  # None: no migration has run (an empty database)
    head: str
    known: bool  # this version has the revision (an unknown one was written by a newer version)

    @property
    def current(self) -> bool:
        return self.revision == self.head

    @property
    def ahead(self) -> bool:
        """A newer version migrated it: fine for this one during a rolling upgrade (migrations add, not remove)."""
        return self.revision is not None and not self.known

    @property
    def usable(self) -> bool:
        return self.current or self.ahead

    def describe(self) -> str:
        if self.current:
            return f"current ({self.head})"
        if self.ahead:
            return f"{self.revision}, newer than this version's {self.head} (an upgrade in progress)"
        if self.revision is None:
            return f"empty (no migration has run; this version needs {self.head}): run `admitflow migrate`"
        return f"{self.revision}, behind this version's {self.head}: run `admitflow migrate`"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(settings: Settings) -> None:
    """Migrate to this version's head; a database being created gets the embedded default's key file with it."""
    if schema_state(settings).revision is None:
        create_local_key_file(settings)
    command.upgrade(alembic_config(settings.database_url), "head")


def head_revision(database_url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert head is not None
    return head


def known_revisions(database_url: str) -> frozenset[str]:
    scripts = ScriptDirectory.from_config(alembic_config(database_url))
    return frozenset(script.revision for script in scripts.walk_revisions())


def schema_state(settings: Settings, head: str | None = None, known: frozenset[str] | None = None) -> SchemaState:
    """Where the database's schema stands (`head` and `known` may be passed in by a caller that asks often)."""
    head = head or head_revision(settings.database_url)
    known = known if known is not None else known_revisions(settings.database_url)
    with engine_for(settings.database_url).connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    return SchemaState(revision, head, revision in known)


def ensure_schema(settings: Settings) -> None:
    """The embedded SQLite default migrates itself; a shared database is migrated by `admitflow migrate` only."""
    state = schema_state(settings)
    if state.usable:
        if state.ahead:
            log.warning("the database schema is %s", state.describe())
        return
    if settings.is_sqlite:
        upgrade(settings)
        return
    raise SchemaOutOfDate(f"the database schema is {state.describe()}")

"""Engine, sessions and the column types every model shares."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Dialect,
    Engine,
    Integer,
    Text,
    any_,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    inspect,
    literal,
    make_url,
    select,
)
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, QueryableAttribute, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.functions import Function
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import DateTime, TypeDecorator

from config.settings import get_settings
from worker.store.phi import current_vault


class Base(DeclarativeBase):
    pass


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EncryptedText(TypeDecorator[str]):
    """A PHI string, stored as a Fernet token."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else current_vault().encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else current_vault().decrypt(value)


class EncryptedJSON(TypeDecorator[Any]):
    """A PHI JSON document (a raw form entry), stored as a Fernet token."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return current_vault().encrypt(json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(current_vault().decrypt(value))


def json_rows(*columns: ColumnClause[Any]) -> TableValuedAlias:
    """`json_to_recordset(:rows) AS page(a type, b type, ...)`: a page of rows bound as one JSON document, which
    is serialized in C and parsed by PostgreSQL, rather than as values Python adapts one by one."""
    rows: Function[Any] = func.json_to_recordset(bindparam("rows", type_=JSON))
    return rows.table_valued(*columns).render_derived(with_types=True)


def among(session: Session, column: QueryableAttribute[Any] | ColumnElement[Any],
          values: Collection[str] | Collection[int]) -> ColumnElement[bool]:
    """`column IN values`; on PostgreSQL as one JSON array, so the statement's text stays the same however many
    values a page brings (a text that grows with them is compiled and parsed anew each time), and the values are
    serialized in C rather than adapted one by one into an array."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(sorted(values))
    element: ColumnElement[Any] = func.json_array_elements_text(literal(sorted(values), JSON))
    if isinstance(column.type, Integer):
        element = cast(element, BigInteger)
    return column == any_(func.array(select(element).scalar_subquery()))


# Connections each process keeps open. The web app runs at most this many requests' database work at once
# (worker/web/app.py sizes its thread pool to it), so a burst never opens and closes connections beyond the pool.
POOL_SIZE = 16
POOL_OVERFLOW = 4  # for a thread that holds two sessions at once (a CLI loop processing inside a session)
POOL_RECYCLE_SECONDS = 1800
PING_AFTER_IDLE_SECONDS = 10.0


# A database host that drops packets answers nothing: give up connecting after this long rather than hang.
CONNECT_TIMEOUT_SECONDS = 10


def make_engine(url: str) -> Engine:
    """An engine that never puts statement parameters into error messages: they can hold PHI."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    connect_args = {} if "connect_timeout" in url else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_recycle=POOL_RECYCLE_SECONDS,
                           hide_parameters=True, connect_args=connect_args)
    _ping_connections_left_idle(engine)
    return engine


def _ping_connections_left_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle: a restarted server or a firewall may have closed
    it meanwhile. A ping on every checkout would cost a round trip per request. A busy connection whose server went
    away fails its statement instead (a 503 to the webhook, a retry for a task), and SQLAlchemy then replaces every
    connection in the pool."""

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception:
            raise DisconnectionError("pooled connection was closed while idle") from None


_engines: dict[str, Engine] = {}
_session_factories: dict[str, sessionmaker[Session]] = {}


def engine_for(url: str) -> Engine:
    """One engine (and pool) per database URL per process."""
    if url not in _engines:
        _engines[url] = make_engine(url)
    return _engines[url]


def dispose_engines() -> None:
    """Close every pooled connection and forget the engines (tests, and before a process exits)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _session_factories.clear()


def forget_inherited_connections() -> None:
    """In a freshly forked worker process: drop the pooled connections inherited from the parent without closing
    them (they still belong to the parent), so this process opens its own."""
    for engine in _engines.values():
        engine.dispose(close=False)


def get_engine() -> Engine:
    return engine_for(get_settings().database_url)


def _session_factory(url: str) -> sessionmaker[Session]:
    if url not in _session_factories:
        _session_factories[url] = sessionmaker(engine_for(url), expire_on_commit=False)
    return _session_factories[url]


def new_session() -> Session:
    return _session_factory(get_settings().database_url)()


def upsert(session: Session, model: type[Base], values: dict[str, Any], on_conflict: dict[str, Any]) -> None:
    """Insert a row, or when its primary key exists, apply `on_conflict` (column expressions) to it instead."""
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    key = [column.name for column in inspect(model).primary_key]
    session.execute(insert(model).values(**values).on_conflict_do_update(index_elements=key, set_=on_conflict))


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()

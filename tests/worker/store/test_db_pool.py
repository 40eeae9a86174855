from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from config.settings import Settings
from worker.store import db


def backend_pid() -> int:
    with db.get_engine().connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_in_use_moments_ago_is_not_pinged_and_one_left_idle_is(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.get_engine()
    pings: list[Any] = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda connection: pings.append(connection) or real_ping(connection))

    first = backend_pid()
    assert backend_pid() == first
    assert pings == []

    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert backend_pid() == first
    assert len(pings) == 1


def test_a_pooled_connection_the_server_closed_while_idle_is_replaced_without_an_error(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    closed = backend_pid()
    admin = create_engine(pg_settings.database_url, poolclass=NullPool)
    with admin.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": closed}).scalar_one()
    admin.dispose()

    assert backend_pid() != closed

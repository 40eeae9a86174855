"""Test configuration: every test gets its own database and settings from the environment.

The database is a fresh SQLite file by default (the embedded default). With ADMITFLOW_TEST_DATABASE_URL set to
PostgreSQL, the whole suite runs on it instead. Tests marked `services` need PostgreSQL and Redis for real; they
skip with the reason when those are absent, and fail instead under ADMITFLOW_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from worker.staff.services import default_services
from worker.store.db import Base, dispose_engines, engine_for, new_session
from worker.store.leases import keeper
from worker.store.phi import reset_vault
from worker.store.schema import upgrade

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "gravityforms"

# Fixed, fictional test keys so a worker subprocess reads what the test process wrote.
TEST_KEYS = {
    "ADMITFLOW_ENCRYPTION_KEYS": "mH5GJ0QK3N0yC1qk2mYB0q5tq1N4m3E1mZpX0sB9a1A=",
    "ADMITFLOW_BLIND_INDEX_KEY": "dGVzdC1ibGluZC1pbmRleC1rZXktMzItYnl0ZXMtbG9uZyEhIQ==",
}
WEBHOOK_SECRET = "test-webhook-secret"

# Under pytest-xdist (`-n 2`) each worker process (gw0, gw1...) gets a database and a Redis database of its own.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _own_database(url: str) -> str:
    if not XDIST_WORKER or not url.startswith("postgresql"):
        return url
    from sqlalchemy.engine import make_url

    target = make_url(url)
    return target.set(database=f"{target.database}_{XDIST_WORKER}").render_as_string(hide_password=False)


def _own_redis(url: str) -> str:
    base, _, number = url.rpartition("/")
    if not XDIST_WORKER or not number.isdigit():
        return url
    return f"{base}/{(int(number) + int(XDIST_WORKER.removeprefix('gw') or 0)) % 16}"


POSTGRES_URL = _own_database(os.environ.get(
    "ADMITFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/admitflow_test"
))
REDIS_URL = _own_redis(os.environ.get("ADMITFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
REQUIRE_SERVICES = os.environ.get("ADMITFLOW_REQUIRE_SERVICES") == "1"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `services` tests run real processes and time their recoveries: under `--dist loadgroup` (the default, see
    pyproject.toml) they all go to one xdist worker, one after another, while the other worker takes the rest."""
    for item in items:
        if item.get_closest_marker("services") is not None:
            item.add_marker(pytest.mark.xdist_group("services"))


@pytest.fixture(autouse=True)
def _services_tests_grouped(request: pytest.FixtureRequest) -> None:
    """xdist groups by the `@group` it appends to each node id: where it no longer does (pytest-xdist#1386), a
    services test fails here instead of racing the others."""
    node = request.node
    if (getattr(request.config.option, "loadgroup", False) and node.get_closest_marker("services") is not None
            and not node.nodeid.endswith("@services")):
        pytest.fail("pytest-xdist did not keep the services tests on one worker (--dist loadgroup): this pytest and "
                    "pytest-xdist no longer work together; install the versions pyproject.toml allows, or run -n 0")


@pytest.fixture(scope="session", autouse=True)
def _own_data_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing a test runs (its subprocesses included) touches the real per-user data directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADMITFLOW_HOME", str(tmp_path_factory.mktemp("admitflow-home")))
        yield


_fresh_databases: dict[str, str | None] = {}


def _ensure_postgres_database(url: str) -> str | None:
    """Create the test database anew, once per test run, so every run starts from the migrations; returns why
    PostgreSQL is unusable, or None."""
    from sqlalchemy.engine import make_url

    if url in _fresh_databases:
        return _fresh_databases[url]
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    problem = None
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    except Exception as exc:
        problem = f"PostgreSQL at {target.host}:{target.port} is not reachable ({type(exc).__name__})"
    finally:
        admin.dispose()
    _fresh_databases[url] = problem
    return problem


def _redis_problem(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:
        return f"Redis at {url} is not reachable ({type(exc).__name__})"
    return None


def need(problem: str | None) -> None:
    if problem is None:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{problem}, and ADMITFLOW_REQUIRE_SERVICES=1 forbids skipping")
    pytest.skip(problem)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    need(_ensure_postgres_database(POSTGRES_URL))
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    need(_redis_problem(REDIS_URL))
    return REDIS_URL


def _truncate_all(url: str) -> None:
    tables = ", ".join(f'"{table.name}"' for table in reversed(Base.metadata.sorted_tables))
    with engine_for(url).begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


_migrated: set[str] = set()


def _database_url(tmp_path: Path) -> str:
    chosen = os.environ.get("ADMITFLOW_TEST_DATABASE_URL")
    return _own_database(chosen) if chosen else f"sqlite:///{tmp_path / 'admitflow-test.db'}"


def configure_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, **extra: str) -> Settings:
    """Point every setting at test values and forget whatever was cached from earlier tests."""
    for name in list(os.environ):
        if name.startswith(("HUBSPOT_", "TWILIO_", "GRAVITYFORMS_", "ADMITFLOW_ENV")):
            monkeypatch.delenv(name, raising=False)
    values = {
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": "",
        "GRAVITYFORMS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ADMITFLOW_KEY_FILE": str(tmp_path / "keys.json"),
        "ROSTER_FILE": str(REPO / "config" / "roster.example.toml"),
        **TEST_KEYS,
        **extra,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    default_services.cache_clear()
    reset_vault()
    return get_settings()


def empty_postgres(settings: Settings) -> None:
    """Migrate the PostgreSQL test database (once per run) and empty every table."""
    if settings.database_url not in _migrated:
        upgrade(settings)
        _migrated.add(settings.database_url)
    _truncate_all(settings.database_url)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    """Settings on a migrated, empty database (SQLite file, or PostgreSQL when chosen)."""
    url = _database_url(tmp_path)
    configured = configure_environment(monkeypatch, tmp_path, url)
    if url.startswith("postgresql"):
        need(_ensure_postgres_database(configured.database_url))
        empty_postgres(configured)
    else:
        upgrade(configured)
    yield configured
    keeper.stop()  # no lease a test took is renewed in the next test's database
    get_settings.cache_clear()
    default_services.cache_clear()
    reset_vault()
    dispose_engines()


@pytest.fixture
def pg_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres_url: str) -> Iterator[Settings]:
    """Settings on the real PostgreSQL test database, migrated and emptied."""
    configured = configure_environment(monkeypatch, tmp_path, postgres_url)
    empty_postgres(configured)
    yield configured
    keeper.stop()  # no lease a test took is renewed in the next test's database
    get_settings.cache_clear()
    default_services.cache_clear()
    reset_vault()
    dispose_engines()


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    db = new_session()
    try:
        yield db
    finally:
        db.rollback()
        db.close()


@pytest.fixture
def form_object() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / "form.json").read_text())
    return loaded


def make_entry(entry_id: int | str, **overrides: Any) -> dict[str, Any]:
    """An entry of the example form, as Gravity Forms sends it; override field ids like '3' for the phone."""
    entry: dict[str, Any] = {
        "id": str(entry_id),
        "form_id": "1",
        "date_created": "2026-11-20 14:02:11",
        "status": "active",
        "ip": "192.0.2.10",
        "source_url": "https://clinic.example.org/contact/",
        "user_agent": "Mozilla/5.0 (example)",
        "1.3": "Jordan",
        "1.6": "Sample",
        "2": "jordan.sample@example.org",
        "3": "(617) 555-0142",
        "4": "I would like to talk to someone about treatment options.",
        "5.1": "1",
    }
    entry.update(overrides)
    return {key: value for key, value in entry.items() if value is not None}

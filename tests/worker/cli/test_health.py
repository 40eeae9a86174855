"""`admitflow health web|worker|beat`, the commands container health checks run: one line, exit 0 or 1 (never 2,
which Docker reserves), whatever goes wrong."""

from __future__ import annotations

from datetime import timedelta

import pytest
import responses
from click.testing import CliRunner

from config.settings import Settings, get_settings
from worker.cli import main
from worker.ops import liveness
from worker.store.db import session_scope, utcnow

HEALTHZ = "http://127.0.0.1:8000/healthz"


def health(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["health", *args])
    assert result.stdout.count("\n") == 1 and "Traceback" not in result.output
    return result.exit_code, result.stdout.strip()


@responses.activate
def test_health_web_is_healthy_only_when_healthz_answers_200() -> None:
    checks = {"database": {"ok": True, "detail": "reachable"}, "beat": {"ok": True, "detail": "last heartbeat 3 s"}}
    responses.get(HEALTHZ, json={"status": "ready", "accepting_webhooks": True, "checks": checks})
    assert health("web") == (0, "web ready: database, beat ok")

    checks["beat"] = {"ok": False, "detail": "no heartbeat yet: start `admitflow beat`"}
    responses.replace(responses.GET, HEALTHZ, status=503,
                      json={"status": "not ready", "accepting_webhooks": True, "checks": checks})
    assert health("web") == (1, "web not ready (503): beat: no heartbeat yet: start `admitflow beat`")


def test_health_web_is_unhealthy_when_nothing_answers() -> None:
    code, line = health("web", "--url", "http://127.0.0.1:9/healthz", "--timeout", "1")
    assert code == 1 and line.startswith("web unhealthy: http://127.0.0.1:9/healthz did not answer")


def test_health_beat_compares_the_heartbeat_row_with_the_maximum_age(settings: Settings) -> None:
    assert health("beat")[0] == 1
    with session_scope() as session:
        liveness.record_run(session, liveness.HEARTBEAT, utcnow() - timedelta(seconds=30))

    assert health("beat") == (0, "beat alive: last heartbeat 30 s ago")
    code, line = health("beat", "--max-age", "10")
    assert code == 1 and line == "beat unhealthy: last heartbeat 30 s ago (more than 10 s)"


def test_health_beat_is_unhealthy_not_an_error_when_the_database_is_down(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()

    assert health("beat") == (1, "beat unhealthy: could not read the heartbeat (OperationalError)")


def test_health_worker_is_unhealthy_without_a_broker(settings: Settings) -> None:
    assert health("worker") == (1, "worker unhealthy: no broker is set")

"""docker-compose.yml runs the same commands the tests and README run natively, with health checks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import REPO
from worker.cli import main

COMPOSE = REPO / "docker-compose.yml"
SECRETS = ("HUBSPOT_TOKEN", "TWILIO_AUTH_TOKEN", "ADMITFLOW_ENCRYPTION_KEYS", "GRAVITYFORMS_WEBHOOK_SECRET")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_it_runs_postgres_redis_migrations_web_worker_and_beat(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "redis", "migrate", "web", "worker", "beat", "flower"}
    assert "FLOWER_BASIC_AUTH" in compose["services"]["flower"]["environment"]
    assert "postgres-data" in compose["volumes"]


def test_every_app_service_runs_an_existing_admitflow_command(compose: dict[str, Any]) -> None:
    for name in ("migrate", "web", "worker", "beat"):
        command = compose["services"][name]["command"]
        assert command[0] == "admitflow"
        result = CliRunner().invoke(main, [*command[1:2], "--help"])
        assert result.exit_code == 0, f"{name}: `admitflow {command[1]}` is not a command"


def test_the_app_waits_for_healthy_databases_and_finished_migrations(compose: dict[str, Any]) -> None:
    for name in ("web", "worker", "beat"):
        depends = compose["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    for name in ("postgres", "redis", "web", "worker"):
        assert "healthcheck" in compose["services"][name], name


def test_redis_keeps_queued_work_across_restarts(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_secrets_are_taken_from_the_environment_never_written_in_the_file(compose: dict[str, Any]) -> None:
    for name in ("web", "worker", "beat", "migrate"):
        environment = compose["services"][name]["environment"]
        for secret in SECRETS:
            assert environment[secret] == f"${{{secret}:-}}"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "POSTGRES_PASSWORD": "x", "FLOWER_BASIC_AUTH": "ops:x"},
    )
    assert result.returncode == 0, result.stderr


# Variables of .env.example the app containers do not take from .env, and why.
NOT_PASSED = {
    "POSTGRES_PASSWORD": "goes into DATABASE_URL",
    "FLOWER_BASIC_AUTH": "for the flower service only",
    "ADMITFLOW_WEB_HOST": "the web service's command sets it",
    "ADMITFLOW_WEB_PORT": "the web service's command sets it",
    "ADMITFLOW_KEY_FILE": "development only: production refuses to start without keys in the environment",
    "STATUS_PASSWORD": "development only: production takes STATUS_PASSWORD_HASH",
    "TWILIO_API_BASE_URL": "tests and local fakes only",
    "SITES_FILE": "a file: mount it and set it in an override, as ROSTER_FILE is mounted",
    "SALESFORCE_PRIVATE_KEY_FILE": "a file: mount it and set it in an override",
}


def test_every_setting_in_env_example_reaches_the_app_containers(compose: dict[str, Any]) -> None:
    """An operator who sets a variable in .env expects it to take effect: each is passed, or listed with why not."""
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.MULTILINE))
    passed = set(compose["x-app"]["environment"])

    assert documented - passed - set(NOT_PASSED) == set()
    assert set(NOT_PASSED) <= documented, "an exception for a variable .env.example no longer has"

"""docker-compose.yml runs the same commands the tests and README run natively, with health checks, and works from
`cp .env.example .env` with only the documented secrets filled in (docs/deploy.md). The stack itself is run for
real by tests/compose/test_stack.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.compose.standin_images import RECIPE_FOR_REPOSITORY, images_named
from tests.conftest import REPO
from worker.cli import main

COMPOSE = REPO / "docker-compose.yml"
APP_SERVICES = ("migrate", "web", "worker", "beat")
SECRETS = ("HUBSPOT_TOKEN", "TWILIO_AUTH_TOKEN", "ADMITFLOW_ENCRYPTION_KEYS", "GRAVITYFORMS_WEBHOOK_SECRET")
# What docs/deploy.md tells an operator to fill in .env before `docker compose up`; the first two compose itself
# refuses to run without.
REQUIRED_BY_COMPOSE = ("POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH")
DOCUMENTED_SECRETS = {
    "POSTGRES_PASSWORD": "a-long-random-database-password",
    "FLOWER_BASIC_AUTH": "ops:a-long-random-flower-password",
    "ADMITFLOW_ENCRYPTION_KEYS": "mH5GJ0QK3N0yC1qk2mYB0q5tq1N4m3E1mZpX0sB9a1A=",
    "ADMITFLOW_BLIND_INDEX_KEY": "dGVzdC1ibGluZC1pbmRleC1rZXktMzItYnl0ZXMtbG9uZyEhIQ==",
    "GRAVITYFORMS_WEBHOOK_SECRET": "a-long-random-webhook-secret",
}
needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def env_file_from_example(**values: str) -> str:
    """.env.example with these variables filled in, as an operator edits it."""
    text = (REPO / ".env.example").read_text()
    for name, value in values.items():
        text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
        assert count == 1, f".env.example has no {name}= line"
    return text


def compose_config(directory: Path, env_text: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` in a copy of the files compose reads, with this .env beside them."""
    shutil.copy(COMPOSE, directory / "docker-compose.yml")
    shutil.copytree(REPO / "config", directory / "config", dirs_exist_ok=True)
    shutil.copytree(REPO / "deploy", directory / "deploy", dirs_exist_ok=True)
    (directory / ".env").write_text(env_text)
    return subprocess.run(["docker-compose", "config"], capture_output=True, text=True, timeout=60, cwd=directory,
                          env={"PATH": "/usr/bin:/bin"})


def test_it_runs_the_stack_and_offers_a_tls_proxy_as_an_option(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", *APP_SERVICES, "flower", "proxy"}
    assert services["proxy"]["profiles"] == ["tls"]
    assert all("profiles" not in service for name, service in services.items() if name != "proxy")
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    assert "postgres-data" in compose["volumes"]


def test_every_app_service_and_health_check_runs_an_existing_admitflow_command(compose: dict[str, Any]) -> None:
    commands = {name: compose["services"][name]["command"] for name in APP_SERVICES}
    commands |= {f"{name} health check": compose["services"][name]["healthcheck"]["test"][1:]
                 for name in ("web", "worker", "beat")}
    for name, command in commands.items():
        assert command[0] == "admitflow", name
        words = [word for word in command[1:] if not word.startswith("-")][:2]
        result = CliRunner().invoke(main, [*words, "--help"])
        assert result.exit_code == 0, f"{name}: `admitflow {' '.join(words)}` is not a command"


def test_workers_send_task_events_so_flower_shows_tasks(compose: dict[str, Any]) -> None:
    assert "--events" in compose["services"]["worker"]["command"]
    assert "--events" in CliRunner().invoke(main, ["worker", "--help"]).output


def test_the_app_waits_for_healthy_databases_and_finished_migrations(compose: dict[str, Any]) -> None:
    for name in ("web", "worker", "beat"):
        depends = compose["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    for name in ("postgres", "redis", "web", "worker", "beat"):
        assert "healthcheck" in compose["services"][name], name


def _bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*([kmg]?)b?", size.lower()).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** " kmg".index(unit or " ")


def test_redis_keeps_queued_work_and_refuses_writes_before_its_container_is_killed(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    # Room for the AOF rewrite's fork and fragmentation between Redis' limit and the container's.
    assert _bytes(command[command.index("--maxmemory") + 1]) <= 0.7 * _bytes(redis["mem_limit"])


def test_memory_limits_use_the_key_both_compose_versions_apply(compose: dict[str, Any]) -> None:
    # docker-compose 1.x ignores deploy.resources without --compatibility; mem_limit is applied by both.
    for name, service in compose["services"].items():
        assert "deploy" not in service, name
        assert "mem_limit" in service, name


def test_every_image_is_pinned_to_a_release_and_has_a_local_stand_in(compose: dict[str, Any]) -> None:
    pulled = [service["image"] for service in compose["services"].values() if "build" not in service]
    pulled += re.findall(r"^FROM\s+(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    for reference in pulled:
        # PostgreSQL numbers its releases major.minor; the others major.minor.patch.
        release = r":\d+\.\d+(-|$)" if reference.startswith("postgres:") else r":\d+\.\d+\.\d+(-|$)"
        assert re.search(release, reference), f"{reference} is not pinned to a release"
    assert sorted(images_named().values()) == sorted(pulled)
    assert set(images_named()) <= set(RECIPE_FOR_REPOSITORY.values())


def test_secrets_are_taken_from_the_environment_never_written_in_the_file(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        for secret in SECRETS:
            assert environment[secret] == f"${{{secret}:-}}"


@needs_compose
def test_env_example_with_the_documented_secrets_passes_docker_compose_config(tmp_path: Path) -> None:
    result = compose_config(tmp_path, env_file_from_example(**DOCUMENTED_SECRETS))

    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["services"]["web"]["environment"]["ADMITFLOW_ENV"] == "production"
    for name in APP_SERVICES:
        for mount in config["services"][name]["volumes"]:
            assert mount["type"] == "bind" and mount["read_only"] is True
            assert Path(mount["source"]).is_absolute() and Path(mount["source"]).exists(), mount


@needs_compose
@pytest.mark.parametrize("missing", REQUIRED_BY_COMPOSE)
def test_docker_compose_config_names_a_required_secret_left_empty(tmp_path: Path, missing: str) -> None:
    result = compose_config(tmp_path, env_file_from_example(**{**DOCUMENTED_SECRETS, missing: ""}))

    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


@needs_compose
def test_the_web_port_is_published_on_loopback_only(tmp_path: Path) -> None:
    result = compose_config(tmp_path, env_file_from_example(**DOCUMENTED_SECRETS))

    config = yaml.safe_load(result.stdout)
    for name, service in config["services"].items():
        if name != "proxy":
            for port in service.get("ports", []):
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


@needs_compose
def test_files_named_in_env_are_mounted_read_only_where_the_setting_points_inside(tmp_path: Path) -> None:
    key = tmp_path / "secrets" / "salesforce.key"
    key.parent.mkdir()
    key.write_text("not a real key")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "sites.toml").write_text("")
    settings = {"SITES_FILE": "./config/sites.toml", "SALESFORCE_PRIVATE_KEY_FILE": str(key),
                "ROSTER_FILE": "./config/roster.example.toml"}
    result = compose_config(tmp_path, env_file_from_example(**DOCUMENTED_SECRETS, **settings))

    assert result.returncode == 0, result.stderr
    for name in APP_SERVICES:
        service = yaml.safe_load(result.stdout)["services"][name]
        assert service["working_dir"] == "/"
        mounts = {_inside(mount["target"]): mount for mount in service["volumes"]}
        for setting, value in settings.items():
            inside = service["environment"][setting]
            assert inside == value
            # The containers run from /, so a relative setting resolves to / + the path, as the target is.
            mount = mounts[_inside("/" + inside)]
            assert mount["read_only"] is True
            assert Path(mount["source"]) == (tmp_path / value).resolve()


@needs_compose
def test_file_settings_left_empty_mount_nothing_a_setting_points_at(tmp_path: Path) -> None:
    result = compose_config(tmp_path, env_file_from_example(**DOCUMENTED_SECRETS))

    service = yaml.safe_load(result.stdout)["services"]["worker"]
    assert service["environment"]["SITES_FILE"] == service["environment"]["SALESFORCE_PRIVATE_KEY_FILE"] == ""
    unset = [mount for mount in service["volumes"] if mount["source"] == "/dev/null"]
    assert len(unset) == 2
    assert all(_inside(mount["target"]).startswith("/run/admitflow/no-") for mount in unset)


def _inside(target: str) -> str:
    return str(PurePosixPath("/", *PurePosixPath(target).parts[1:]))


def _locked() -> dict[str, str]:
    text = (REPO / "requirements.txt").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)(?: ;[^\\\n]*)?((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})+)",
                      text, re.MULTILINE)
    assert len(pins) == len(re.findall(r"^[A-Za-z0-9]", text, re.MULTILINE)), "a requirement without a hash"
    return {canonicalize_name(name): version for name, version, _ in pins}


def test_the_lock_pins_every_dependency_and_the_build_backend_with_hashes() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    locked = _locked()
    for line in [*project["project"]["dependencies"], *project["build-system"]["requires"]]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.txt: update the lock (docs/deploy.md)"
        assert requirement.specifier.contains(locked[name], prereleases=True), f"{name}=={locked[name]}: {line}"


def test_the_image_installs_only_from_the_lock_and_runs_as_an_unprivileged_user() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.txt" in dockerfile
    assert "pip install --no-index --no-deps --no-build-isolation ." in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


# Variables of .env.example the app containers do not take from .env, and why.
NOT_PASSED = {
    "POSTGRES_PASSWORD": "goes into DATABASE_URL",
    "FLOWER_BASIC_AUTH": "for the flower service only",
    "FLOWER_PORT": "the loopback port compose publishes Flower on",
    "ADMITFLOW_WEB_HOST": "the address compose publishes the web port on; the web service's command sets its own",
    "ADMITFLOW_WEB_PORT": "the port compose publishes the web port on; the web service's command sets its own",
    "ADMITFLOW_DOMAIN": "for the proxy service only",
    "PROXY_HTTP_PORT": "for the proxy service only",
    "PROXY_HTTPS_PORT": "for the proxy service only",
    "PIP_INDEX_URL": "for building the image only",
    "ADMITFLOW_HOME": "development only: where the embedded default keeps its database and key file",
    "ADMITFLOW_KEY_FILE": "development only: production refuses to start without keys in the environment",
    "STATUS_PASSWORD": "development only: production takes STATUS_PASSWORD_HASH",
    "TWILIO_API_BASE_URL": "tests and local fakes only",
}


def test_every_setting_in_env_example_reaches_the_app_containers(compose: dict[str, Any]) -> None:
    """An operator who sets a variable in .env expects it to take effect: each is passed, or listed with why not."""
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.MULTILINE))
    passed = set(compose["x-app"]["environment"])

    assert documented - passed - set(NOT_PASSED) == set()
    assert set(NOT_PASSED) <= documented, "an exception for a variable .env.example no longer has"

"""Misconfiguration on the real processes: `admitflow web|worker|beat` refuse to start with one line, a wrong
DATABASE_URL is one line and exit 2 from every command, refused webhooks are counted by reason, and a dead beat
turns /healthz 503 (heartbeat interval and maximum age shortened to seconds)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EXAMPLES, REPO, TEST_KEYS, WEBHOOK_SECRET
from tests.support.processes import free_port, healthy, wait_for

ROSTER = str(REPO / "config" / "roster.example.toml")


def environment(tmp_path: Path, **values: str) -> dict[str, str]:
    inherited = {name: value for name, value in os.environ.items() if not name.startswith(
        ("ADMITFLOW_", "HUBSPOT_", "TWILIO_", "SALESFORCE_", "GRAVITYFORMS_", "CELERY_", "DATABASE_URL", "SITES_FILE",
         "ROSTER_FILE"))}
    return {**inherited, "ADMITFLOW_HOME": str(tmp_path / "home"), "ROSTER_FILE": ROSTER,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'admitflow.db'}", "GRAVITYFORMS_WEBHOOK_SECRET": WEBHOOK_SECRET,
            **values}


def admitflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker.cli", *args]


def run_all(commands: dict[str, list[str]], env: dict[str, str]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Start the commands together (they each take a second to import), wait for all."""
    started = {name: subprocess.Popen(admitflow(*args), env=env, cwd=REPO, text=True, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE) for name, args in commands.items()}
    finished = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=60)
        finished[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return finished


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


DOORS = {"web": ["web", "--port", "1"], "worker": ["worker"], "beat": ["beat"]}


def test_production_without_keys_web_worker_and_beat_refuse_to_start_with_one_line(tmp_path: Path) -> None:
    env = environment(tmp_path, ADMITFLOW_ENV="production", CELERY_BROKER_URL="redis://127.0.0.1:1/0")

    for name, result in run_all(DOORS, env).items():
        assert result.returncode == 2, name
        assert one_line(result) == (
            "Error: ADMITFLOW_ENV=production needs ADMITFLOW_ENCRYPTION_KEYS and ADMITFLOW_BLIND_INDEX_KEY from the "
            "environment; make them with `admitflow keys generate` and keep them in your secret store"), name


def test_a_wrong_database_url_is_one_line_and_exit_2_from_every_command(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://admitflow:not-shown@127.0.0.1:{free_port()}/admitflow"
    env = environment(tmp_path, DATABASE_URL=url, CELERY_BROKER_URL="redis://127.0.0.1:1/0", **TEST_KEYS)
    commands = {**DOORS, "migrate": ["migrate"], "submissions list": ["submissions", "list"]}

    for name, result in run_all(commands, env).items():
        assert result.returncode == 2, name
        line = one_line(result)
        assert line.startswith("Error: the database at postgresql+psycopg://admitflow:***@127.0.0.1:"), name
        assert "Connection refused" in line and "check the host and port in DATABASE_URL" in line, name
        assert "not-shown" not in line


@pytest.mark.services
def test_a_database_role_that_does_not_exist_is_named(tmp_path: Path, postgres_url: str) -> None:
    url = postgres_url.replace("postgres@", "admitflow_no_such_role@")
    env = environment(tmp_path, DATABASE_URL=url, **TEST_KEYS)

    result = run_all({"migrate": ["migrate"]}, env)["migrate"]

    assert result.returncode == 2
    assert 'role "admitflow_no_such_role" does not exist): create the role' in one_line(result)


@contextmanager
def started(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as handle:
        process = subprocess.Popen(admitflow(*args), env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def scrape(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples if sample.name == name}


def test_refused_webhooks_are_counted_by_reason_and_logged_one_line_each(tmp_path: Path) -> None:
    env = environment(tmp_path, ADMITFLOW_LOG_FORMAT="json", **TEST_KEYS)
    assert subprocess.run(admitflow("forms", "add", str(EXAMPLES / "form.json")), env=env, cwd=REPO,
                          capture_output=True, timeout=60).returncode == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hook, secret = f"{url}/hooks/gravityforms", {"X-Admitflow-Secret": WEBHOOK_SECRET}
    with started(["web", "--port", str(port)], env, tmp_path / "web.log"):
        wait_for(lambda: healthy(url), timeout=30, what="the web server")
        answers = [
            requests.post(hook, data=b'{"id": "1"}', timeout=5).status_code,
            requests.post(hook, data=b"{not json", headers=secret, timeout=5).status_code,
            requests.post(hook, json={"form_id": "1", "2": "pat.sample@example.org"}, headers=secret,
                          timeout=5).status_code,
            requests.post(hook, data=b"x" * 300_000, headers=secret, timeout=5).status_code,
        ]
        assert answers == [401, 400, 422, 413]
        expected = {
            (("door", "gravityforms"), ("reason", "bad_secret"), ("status", "401")): 1.0,
            (("door", "gravityforms"), ("reason", "not_json"), ("status", "400")): 1.0,
            (("door", "gravityforms"), ("reason", "invalid_entry"), ("status", "422")): 1.0,
            (("door", "gravityforms"), ("reason", "too_large"), ("status", "413")): 1.0,
        }
        wait_for(lambda: scrape(url, "admitflow_webhooks_rejected_total") == expected, timeout=15,
                 what="the refused webhooks counted in /metrics")
    log = (tmp_path / "web.log").read_text()
    refused = [line for line in log.splitlines() if "refused a gravityforms webhook" in line]
    assert len(refused) == 4 and "pat.sample" not in log


@pytest.mark.services
def test_killing_beat_turns_healthz_503_within_the_heartbeat_max_age(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    from sqlalchemy.engine import make_url

    from config.settings import Settings
    from tests.conftest import _ensure_postgres_database
    from worker.store.schema import upgrade

    redis.Redis.from_url(redis_url).flushdb()
    target = make_url(postgres_url)
    database_url = target.set(database=f"{target.database}_startup").render_as_string(hide_password=False)
    assert _ensure_postgres_database(database_url) is None
    env = environment(tmp_path, DATABASE_URL=database_url, CELERY_BROKER_URL=redis_url, ADMITFLOW_LOG_FORMAT="json",
                      ADMITFLOW_HEARTBEAT_SECONDS="1", ADMITFLOW_HEARTBEAT_MAX_AGE_SECONDS="4", **TEST_KEYS)
    upgrade(Settings(DATABASE_URL=database_url, **TEST_KEYS))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with started(["web", "--port", str(port)], env, tmp_path / "web.log"), \
            started(["worker", "--concurrency", "1"], env, tmp_path / "worker.log"), \
            started(["beat"], env, tmp_path / "beat.log") as beat:
        def ready() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=5).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, timeout=60, what="/healthz 200 with web, worker and beat running")
        for door in ("worker", "beat"):
            check = subprocess.run(admitflow("health", door), env=env, cwd=REPO, capture_output=True, text=True,
                                   timeout=60)
            assert check.returncode == 0, check.stdout
        beat.send_signal(signal.SIGKILL)
        beat.wait(timeout=10)

        def not_ready() -> bool:
            response = requests.get(f"{url}/healthz", timeout=5)
            return response.status_code == 503 and not response.json()["checks"]["beat"]["ok"]

        wait_for(not_ready, timeout=30, what="/healthz 503 naming beat")
    log_lines = [line for line in (tmp_path / "worker.log").read_text().splitlines() if line.startswith("{")]
    assert not [line for line in log_lines if "admitflow.heartbeat" in line]  # routine runs, one a second, unlogged

"""The real web server and a real Celery worker on PostgreSQL and Redis, with HubSpot and Twilio faked on loopback,
for the CRM storm and crash tests. The worker runs in its own process group, so a test can SIGKILL all of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from config.settings import Settings
from tests.fakes.providers import FakeProviders
from tests.integration.test_end_to_end import Stack, provider_environment
from tests.support.processes import free_port, healthy, wait_for


@dataclass
class CrmStack(Stack):
    worker_concurrency: int = 4
    worker: subprocess.Popen[bytes] | None = None
    restarts: int = field(default=0)

    def start_worker(self) -> None:
        log = self.logs[1].with_name(f"worker-{self.restarts}.log")
        self.logs.append(log)
        with log.open("wb") as handle:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "worker", "--concurrency", str(self.worker_concurrency)],
                env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.restarts += 1

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool processes: no shutdown, no acknowledgement, no rollback."""
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=10)
        self.worker = None

    def stop_worker(self) -> None:
        if self.worker is None:
            return
        os.killpg(self.worker.pid, signal.SIGTERM)
        try:
            self.worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(timeout=10)
        self.worker = None


@contextmanager
def crm_stack(
    pg_settings: Settings, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    *, concurrency: int = 4, **extra_env: str,
) -> Iterator[CrmStack]:
    with FakeProviders() as providers:
        settings, env = provider_environment(
            monkeypatch, tmp_path, pg_settings.database_url, redis_url, providers, **extra_env
        )
        port = free_port()
        logs = [tmp_path / "web.log", tmp_path / "worker.log"]
        with logs[0].open("wb") as handle:
            web = subprocess.Popen([sys.executable, "-m", "worker.cli", "web", "--port", str(port)],
                                   env=env, stdout=handle, stderr=subprocess.STDOUT)
        built = CrmStack(f"http://127.0.0.1:{port}", providers, settings, logs, env, concurrency)
        built.start_worker()
        try:
            wait_for(lambda: healthy(built.web_url), timeout=30, what="the web server's /healthz")
            yield built
        finally:
            built.stop_worker()
            web.terminate()
            try:
                web.wait(timeout=20)
            except subprocess.TimeoutExpired:
                web.kill()

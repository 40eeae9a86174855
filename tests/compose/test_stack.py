"""The real docker-compose.yml, brought up on a Docker engine the way docs/deploy.md tells an operator to: a copy
of the repository, `cp .env.example .env` with only the documented secrets filled in, keys from
`admitflow keys generate` run in the image, `docker compose up -d`, then the form registered with
`admitflow forms add`. A webhook posted to the published port on 127.0.0.1 becomes a processed lead, and another
does after the worker container restarts.

Images compose pulls are local stand-ins (tests/compose/standin_images.py). Skipped with the reason where no
engine answers, failed instead under ADMITFLOW_REQUIRE_DOCKER=1 (CI on a machine with the engine installed).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compose.standin_images import build_standins, images_named
from tests.conftest import EXAMPLES, REPO
from tests.support.processes import free_port, wait_for

# A whole stack of real services: kept out of the fast suite with the other `services` tests.
pytestmark = pytest.mark.services
REQUIRE_DOCKER = os.environ.get("ADMITFLOW_REQUIRE_DOCKER") == "1"
HEALTH_CHECKED = ("postgres", "redis", "web", "worker", "beat")
# Files an operator's clone may hold that must never reach the image build (.dockerignore).
DECOYS = (".env", ".admitflow-keys.json", "admitflow.db", ".venv/pyvenv.cfg", "config/roster.toml",
          "secrets/salesforce.key", ".git/config")


def _compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 check=False).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed"
    if _compose_command() is None:
        return "neither `docker compose` nor docker-compose is installed"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          check=False, timeout=30)
    if info.returncode != 0:
        return f"the Docker engine does not answer (start dockerd): {info.stderr.strip()[:200]}"
    return None


@dataclass
class Stack:
    """One compose project in a copy of the repository, driven by the compose command line."""

    directory: Path
    name: str
    command: list[str]
    ports: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        # A clean environment: compose reads ${...} from the shell before .env, and the tests' own variables are
        # no operator's.
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
        env |= {name: os.environ[name] for name in ("DOCKER_HOST",) if name in os.environ}
        result = subprocess.run([*self.command, "-p", self.name, *args], cwd=self.directory, env=env,
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"`compose {' '.join(args)}` exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result

    def timed(self, what: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = self(*args, timeout=timeout)
        self.timings[what] = time.monotonic() - started
        return result

    def container(self, service: str) -> str:
        return self("ps", "-q", service).stdout.strip()

    def inspect(self, service: str, template: str) -> str:
        return subprocess.run(["docker", "inspect", "--format", template, self.container(service)],
                              capture_output=True, text=True, check=True).stdout.strip()

    def healthy(self, *services: str) -> bool:
        return all(self.inspect(service, "{{.State.Health.Status}}") == "healthy" for service in services)

    def admitflow(self, *args: str) -> str:
        return self("exec", "-T", "web", "admitflow", *args, timeout=60).stdout

    def post(self, entry: dict[str, Any], secret: str) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{self.ports['ADMITFLOW_WEB_PORT']}/hooks/gravityforms", json=entry,
                          headers={"X-Admitflow-Secret": secret}, timeout=10)

    def processed(self, entry_id: str) -> bool:
        listing = self.admitflow("submissions", "list", "--state", "processed")
        return re.search(rf"\b{entry_id}\b", listing) is not None


def _copy_of_the_repository(target: Path) -> None:
    """What a fresh clone holds: the tracked files and those not yet committed, nothing git ignores."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _set(env_file: Path, **values: str) -> None:
    """Fill variables in .env as an operator does: on their own line, replacing the empty one."""
    text = env_file.read_text()
    for name, value in values.items():
        text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
        assert count == 1, f".env.example has no {name}= line"
    env_file.write_text(text)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    problem = _engine_problem()
    if problem:
        if REQUIRE_DOCKER:
            pytest.fail(f"ADMITFLOW_REQUIRE_DOCKER=1 but {problem}")
        pytest.skip(problem)
    command = _compose_command()
    assert command is not None
    started = time.monotonic()
    build_standins(say=lambda message: print(f"stand-in {message}"))
    standins = time.monotonic() - started

    directory = tmp_path_factory.mktemp("clone")
    _copy_of_the_repository(directory)
    ports = {name: free_port() for name in ("ADMITFLOW_WEB_PORT", "FLOWER_PORT", "PROXY_HTTP_PORT", "PROXY_HTTPS_PORT")}
    stack = Stack(directory, f"admitflow-smoke-{os.getpid()}-{secrets.token_hex(3)}", command, ports)
    stack.timings["stand-in images"] = standins
    env_file = directory / ".env"
    shutil.copy(directory / ".env.example", env_file)
    _set(env_file, POSTGRES_PASSWORD=secrets.token_hex(16), FLOWER_BASIC_AUTH=f"ops:{secrets.token_hex(8)}",
         GRAVITYFORMS_WEBHOOK_SECRET=secrets.token_urlsafe(24), ADMITFLOW_DOMAIN="localhost",
         **{name: str(port) for name, port in ports.items()})
    try:
        stack.timed("image build", "build")
        keys = stack("run", "--rm", "--no-deps", "-T", "web", "admitflow", "keys", "generate").stdout
        _set(env_file, **dict(re.findall(r"^(ADMITFLOW_\w+_KEYS?)=(\S+)$", keys, re.MULTILINE)))
        stack.timed("up", "up", "-d")
        started = time.monotonic()
        wait_for(lambda: stack.healthy(*HEALTH_CHECKED), timeout=240, what=f"{', '.join(HEALTH_CHECKED)} healthy")
        stack.timings["healthy after up"] = time.monotonic() - started
        form = EXAMPLES / "form.json"
        stack("run", "--rm", "--no-deps", "-T", "-v", f"{form}:/form.json:ro", "web",
              "admitflow", "forms", "add", "/form.json")
        yield stack
    except BaseException:
        print(stack("logs", "--no-color", "--tail", "60", check=False).stdout[-12000:])
        raise
    finally:
        started = time.monotonic()
        stack("--profile", "tls", "down", "-v", "--remove-orphans", "-t", "30", check=False)
        stack.timings["down"] = time.monotonic() - started
        print("compose smoke timings: " + ", ".join(f"{what} {seconds:.0f} s" for what, seconds in
                                                     stack.timings.items()))


def _entry(entry_id: str, first: str, phone: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = json.loads((EXAMPLES / "entries.json").read_text())["entries"]
    return {**entries[0], "id": entry_id, "1.3": first, "2": f"{first.lower()}@example.org", "3": phone}


def test_a_webhook_becomes_a_processed_lead_and_another_after_the_worker_restarts(stack: Stack) -> None:
    secret = re.search(r"^GRAVITYFORMS_WEBHOOK_SECRET=(\S+)$", (stack.directory / ".env").read_text(), re.MULTILINE)
    assert secret is not None

    answer = stack.post(_entry("9101", "Avery", "(617) 555-0131"), secret.group(1))
    assert answer.status_code == 202, answer.text
    wait_for(lambda: stack.processed("9101"), timeout=90, what="entry 9101 processed")

    started = time.monotonic()
    stack("restart", "worker", timeout=150)
    stack.timings["worker restart"] = time.monotonic() - started
    answer = stack.post(_entry("9102", "Rowan", "(617) 555-0132"), secret.group(1))
    assert answer.status_code == 202, answer.text
    wait_for(lambda: stack.processed("9102"), timeout=120, what="entry 9102 processed after the worker restart")
    wait_for(lambda: stack.healthy("worker"), timeout=120, what="the restarted worker healthy")


@pytest.mark.parametrize("service", ["web", "worker", "beat"])
def test_a_key_missing_from_env_stops_the_service_with_one_line_naming_it(stack: Stack, service: str) -> None:
    command = stack.inspect(service, "{{json .Config.Cmd}}")
    refused = stack("run", "--rm", "--no-deps", "-T", "-e", "ADMITFLOW_BLIND_INDEX_KEY=", service,
                    *json.loads(command), timeout=120, check=False)

    assert refused.returncode != 0
    # The container's output arrives among compose's own progress lines.
    output = refused.stdout + refused.stderr
    assert len([line for line in output.splitlines() if "ADMITFLOW_BLIND_INDEX_KEY" in line]) == 1, output
    assert "Traceback" not in output


def test_flower_shows_the_tasks_workers_ran(stack: Stack) -> None:
    user, password = re.search(r"^FLOWER_BASIC_AUTH=(\S+):(\S+)$", (stack.directory / ".env").read_text(),
                               re.MULTILINE).groups()  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{stack.ports['FLOWER_PORT']}/api/tasks"
    assert httpx.get(url, timeout=10).status_code == 401

    def seen() -> bool:
        tasks = httpx.get(url, auth=(user, password), timeout=10).json()
        return any(task.get("name", "").startswith("admitflow.") for task in tasks.values())

    wait_for(seen, timeout=60, what="Flower listing an admitflow task")


def test_ports_memory_and_users_are_what_compose_promises(stack: Stack) -> None:
    published = json.loads(stack.inspect("web", "{{json .NetworkSettings.Ports}}"))["8000/tcp"]
    assert {binding["HostIp"] for binding in published} == {"127.0.0.1"}
    assert stack.inspect("redis", "{{.HostConfig.Memory}}") == str(256 * 1024 * 1024)
    maxmemory = stack("exec", "-T", "redis", "redis-cli", "config", "get", "maxmemory").stdout.split()
    assert int(maxmemory[1]) == 160 * 1024 * 1024
    for service in ("web", "worker", "beat"):
        assert stack("exec", "-T", service, "id", "-u").stdout.strip() == "10001", service


def test_the_tls_proxy_serves_the_intake_and_hides_metrics(stack: Stack, tmp_path: Path) -> None:
    stack("--profile", "tls", "up", "-d", "proxy")
    root = tmp_path / "caddy-root.crt"

    def certificate_made() -> bool:
        found = stack("exec", "-T", "proxy", "cat", "/data/caddy/pki/authorities/local/root.crt", check=False)
        root.write_text(found.stdout)
        return found.returncode == 0

    wait_for(certificate_made, timeout=60, what="Caddy's local certificate authority")
    proxy = f"https://localhost:{stack.ports['PROXY_HTTPS_PORT']}"

    def trusted() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=root)

    def answers() -> bool:
        try:
            return httpx.get(f"{proxy}/healthz", verify=trusted(), timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answers, timeout=60, what="/healthz through the proxy")
    assert httpx.get(f"{proxy}/metrics", verify=trusted(), timeout=5).status_code == 404
    direct = httpx.get(f"http://127.0.0.1:{stack.ports['ADMITFLOW_WEB_PORT']}/metrics", timeout=5)
    assert direct.status_code == 200


def test_the_build_context_holds_only_what_the_image_needs(stack: Stack) -> None:
    for decoy in DECOYS:
        path = stack.directory / decoy
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text("must not reach the build")
    probe = f"{stack.name}-context"
    subprocess.run(["docker", "build", "-q", "-t", probe, "-f", "-", str(stack.directory)], check=True,
                   input=f"FROM {images_named()['python']}\nCOPY . /context\n", text=True, capture_output=True)
    try:
        listed = subprocess.run(["docker", "run", "--rm", probe, "find", "/context", "-type", "f"], check=True,
                                capture_output=True, text=True).stdout.split()
    finally:
        subprocess.run(["docker", "rmi", "-f", probe], check=False, capture_output=True)
    sent = {name.removeprefix("/context/") for name in listed}

    assert not sent & set(DECOYS)
    assert {"requirements.txt", "pyproject.toml", "worker/cli/__init__.py", "config/roster.example.toml"} <= sent
    assert all(name.split("/")[0] in {"requirements.txt", "pyproject.toml", "README.md", "worker", "integrations",
                                      "config"} for name in sent), sorted(sent)

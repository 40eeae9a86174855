"""A private Redis and a private PostgreSQL cluster on free loopback ports, in a temporary directory, for tests
that stop, restart or wipe them. The shared services on 6379 and 5432 serve other test runs and are never touched.

PostgreSQL refuses to run as root, so its commands run as the `postgres` OS user when we are root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support.processes import free_port, wait_for


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's server binaries (Debian's layout), else whatever initdb is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def missing_private_services() -> str | None:
    """Why private services cannot be started here, or None."""
    missing = []
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if postgres_bin_dir() is None:
        missing.append("initdb/pg_ctl")
    if missing:
        return f"{' and '.join(missing)} not installed: needed to run a private Redis and PostgreSQL to fault"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a `postgres` OS user to run a private PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root without `runuser` on PATH (util-linux, in /usr/sbin) to run PostgreSQL as postgres"
    return None


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class PrivateRedis:
    """redis-server with AOF persistence (as in production), so a restart keeps the queue and a wipe does not."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=5)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
                 "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for(self._answers, timeout=20, what=f"the private Redis on port {self.port}")

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()  # SIGTERM: Redis flushes its AOF and exits
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def restart_wiped(self) -> None:
        """Restart with no data: as if the broker's disk were lost."""
        self.stop()
        shutil.rmtree(self.directory)
        self.start()


@dataclass
class PrivatePostgres:
    """A throwaway cluster: trust authentication, fsync off (the data is disposable), loopback only."""

    directory: Path
    port: int
    bin_dir: Path

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        subprocess.run(_as_postgres(list(args)), check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.directory.mkdir(parents=True)
        _chown_to_postgres(self.directory)
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "--encoding=UTF8", "--locale=C")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as in a crash or a failover, but nothing is corrupted."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text

        admin = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)


@dataclass
class PrivateServices:
    redis: PrivateRedis
    postgres: PrivatePostgres


@contextmanager
def private_services() -> Iterator[PrivateServices]:
    """Start a private Redis and PostgreSQL; stop both and delete their files however the block ends."""
    problem = missing_private_services()
    if problem is not None:
        raise RuntimeError(problem)
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None
    base = Path(tempfile.mkdtemp(prefix="admitflow-faults-"))
    base.chmod(0o755)  # the postgres user must reach its data directory inside
    services = PrivateServices(PrivateRedis(base / "redis", free_port()),
                               PrivatePostgres(base / "postgres", free_port(), bin_dir))
    try:
        services.postgres.init()
        services.postgres.start()
        services.redis.start()
        yield services
    finally:
        try:
            services.redis.stop()
        finally:
            try:
                services.postgres.stop()
            finally:
                shutil.rmtree(base, ignore_errors=True)

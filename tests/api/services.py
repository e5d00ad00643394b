"""Throwaway PostgreSQL, Redis and Prometheus servers for the scale-out and KEDA tests: real
servers, on loopback only, on free ports, with their files in a temporary directory that is removed
when they stop.

The binaries come from Debian's ``postgresql``, ``redis-server`` and ``prometheus`` packages, which
``.ci/run`` installs. When they are missing the tests *fail* with that advice rather than skip: a skipped
scale-out test would let a broken multi-replica setup pass CI unnoticed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import free_port

INSTALL_HINT = ("run .ci/run, or install the Debian packages yourself: "
                "apt-get install -y --no-install-recommends postgresql redis-server prometheus")


def _version_key(path: str) -> tuple[int, ...]:
    parts = Path(path).parts  # /usr/lib/postgresql/<version>/bin/initdb
    return tuple(int(p) for p in parts[-3].split(".") if p.isdigit())


def postgres_bin() -> Path:
    """The newest PostgreSQL's bin directory (Debian keeps initdb and pg_ctl off the PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    pytest.fail(f"PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin nor on the "
                f"PATH): {INSTALL_HINT}", pytrace=False)


def redis_bin() -> Path:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server"
                                             if os.path.exists("/usr/bin/redis-server") else None)
    if not found:
        pytest.fail(f"redis-server is not installed: {INSTALL_HINT}", pytrace=False)
    return Path(found)


class PostgresServer:
    """``initdb`` + ``pg_ctl`` in a temporary directory. PostgreSQL refuses to run as root, so as
    root every command runs as the ``postgres`` OS user (``runuser``), which owns the directory."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pmx-pg-"))  # not pytest's tmp: mode 0700 per user
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.fail("running as root needs runuser (util-linux) to start PostgreSQL as the "
                            "postgres user", pytrace=False)
            try:
                import pwd

                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(f"there is no postgres OS user to run PostgreSQL as: {INSTALL_HINT}",
                            pytrace=False)
            self._as_user = ["runuser", "-u", "postgres", "--"]
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.socket_dir.mkdir()
        if self._as_user:
            os.chown(self.socket_dir, owner.pw_uid, owner.pw_gid)

    def _run(self, *command: str, timeout: float = 120) -> str:
        done = subprocess.run([*self._as_user, *command], capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n"
                               f"{done.stderr}\n{log}")
        return done.stdout

    def start(self) -> PostgresServer:
        if not self.data.exists():
            # trust auth is safe here: loopback and a private socket dir, for one test session.
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-sync")
        # fsync off: a throwaway cluster does not need to survive a crash, and tests run faster.
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60",
                          "stop", timeout=90)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class ChildServer:
    """A server run as a child process (``process``) with its files under ``root``."""

    process: subprocess.Popen | None
    root: Path

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer(ChildServer):
    """``redis-server`` without persistence; :meth:`stop` and :meth:`start` again reuse the port, so
    clients configured with :attr:`url` can reconnect."""

    def __init__(self) -> None:
        self.binary = redis_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pmx-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> RedisServer:
        log = open(self.root / "redis.log", "a")  # noqa: SIM115 - the child writes it until stop()
        self.process = subprocess.Popen(
            [str(self.binary), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.root), "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{(self.root / 'redis.log').read_text()}")
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    client.ping()
                return self
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {timeout} s")



@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.cleanup()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.cleanup()


class PrometheusServer(ChildServer):
    """``prometheus`` scraping ``targets`` (host:port) every ``scrape_interval``, TSDB in a
    temporary directory; :meth:`start` returns once ``/-/ready`` answers."""

    def __init__(self, targets: list[str], scrape_interval: str = "200ms") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail(f"prometheus is not installed: {INSTALL_HINT}", pytrace=False)
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pmx-prometheus-"))
        targets_yaml = ", ".join(f'"{t}"' for t in targets)
        (self.root / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {scrape_interval}\n  scrape_timeout: {scrape_interval}\n"
            f"scrape_configs:\n  - job_name: pools\n    static_configs:\n"
            f"      - targets: [{targets_yaml}]\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> PrometheusServer:
        import httpx

        log = open(self.root / "prometheus.log", "a")  # noqa: SIM115 - the child writes it until stop()
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.root / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.root / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{(self.root / 'prometheus.log').read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus was not ready within {timeout} s")

    def query(self, expression: str) -> list[dict]:
        import httpx

        body = httpx.post(f"{self.url}/api/v1/query", data={"query": expression}, timeout=5).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, expression: str, value: float, timeout: float = 30) -> None:
        """Until ``expression`` answers ``value`` (a scrape has brought it in)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expression)
            if result and float(result[0]["value"][1]) == value:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression} did not reach {value} within {timeout} s: {result}")
            time.sleep(0.02)



@contextlib.contextmanager
def prometheus_server(targets: list[str], scrape_interval: str = "200ms") -> Iterator[PrometheusServer]:
    server = PrometheusServer(targets, scrape_interval)
    try:
        yield server.start()
    finally:
        server.cleanup()

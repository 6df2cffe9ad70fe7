"""Fixtures shared by the service tests: real servers on loopback with real databases.

The service tests run against both databases: SQLite (a file in a temporary folder) and
PostgreSQL (a real server this test session starts in a temporary folder on 127.0.0.1 and
stops at the end).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.app import create_app
from service.settings import Settings

PG_BIN = Path(os.environ.get("LOOPE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ThreadServer:
    """A uvicorn server in a thread of the test process, listening on 127.0.0.1."""

    def __init__(self, settings: Settings, dispatch: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, dispatch=dispatch)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class PostgresServer:
    """A throw-away PostgreSQL cluster in a temporary folder, listening on 127.0.0.1.

    `initdb` refuses to run as root, so as root the cluster belongs to the postgres user.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="loope-pg-"))
        self.data = self.dir / "data"
        self._names = itertools.count()

    def _as_owner(self, *command: str) -> None:
        line = " ".join(command)
        if os.geteuid() == 0:
            shutil.chown(self.dir, user=PG_USER)
            command = ("su", PG_USER, "-s", "/bin/sh", "-c", line)
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._as_owner(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", PG_USER,
            "-E", "UTF8", "--no-locale",
        )  # fmt: skip
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -F"
        self._as_owner(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
            "-o", f"'{options}'", "start",
        )  # fmt: skip

    def stop(self) -> None:
        try:
            self._as_owner(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"loope_test_{next(self._names)}"
        dsn = f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session; skipped (with the reason) without binaries."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (set LOOPE_TEST_PG_BIN)")
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'loope.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ThreadServer]:
    """A real server on each database in turn (auth off on loopback, no dispatcher)."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with ThreadServer(settings, dispatch=False) as running:
        yield running


@pytest.fixture
def api(server: ThreadServer) -> Iterator[httpx.Client]:
    """A client of the `server` fixture's REST API."""
    with httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as client:
        yield client


@pytest.fixture
def serve(tmp_path: Path, database_url: str) -> Iterator[Callable[..., ThreadServer]]:
    """Start servers on this test's database with other settings, e.g. `serve(auth="on")`."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: object) -> ThreadServer:
            settings = Settings(data_dir=tmp_path / "data", database_url=database_url, **overrides)
            return stack.enter_context(ThreadServer(settings, dispatch=False))

        yield start

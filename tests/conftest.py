"""Fixtures shared by the service tests: real servers on loopback with real databases."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.app import create_app
from service.settings import Settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ThreadServer:
    """A uvicorn server in a thread of the test process, listening on 127.0.0.1."""

    def __init__(self, settings: Settings, dispatch: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings, dispatch=dispatch), host="127.0.0.1", port=self.port,
            log_level="warning",
        )  # fmt: skip
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


@pytest.fixture
def api(tmp_path: Path) -> Iterator[httpx.Client]:
    """A client of a real server (SQLite file in a temporary folder, no dispatcher)."""
    settings = Settings(data_dir=tmp_path / "data")
    with (
        ThreadServer(settings, dispatch=False) as server,
        httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as client,
    ):
        yield client

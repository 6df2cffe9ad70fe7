"""Keep `loope serve`'s server process running.

The server (API, dispatcher, Ray driver) is one process. Ray ends a driver that loses its
cluster: it aborts it when the head comes back as a new cluster (`WrongClusterID`) and
exits it when the head stays unreachable past its reconnect timeout. `loope serve`
therefore runs the server as a child and starts it again when it dies unexpectedly (a
non-zero exit, or a signal the supervisor did not send), after a back-off that doubles from
`first_delay_s` to `max_delay_s` and returns to `first_delay_s` once a child has lived
`healthy_after_s`. After `max_failures` failures within `failure_window_s` it gives up with
exit code 1, so a broken configuration does not loop forever.

A server that never came up is not restarted: until a child has been ready, its death is a
start failure (a port in use, a refused configuration), and the supervisor exits at once with
that child's exit code. A child is ready when it has created the file named by its
`READY_FILE_ENV` variable; `serve_app` does that once uvicorn listens (after the app's
startup, so after the dispatcher has connected to Ray).

Only one child runs at a time (SQLite has a single writer process). On Linux the child gets
PR_SET_PDEATHSIG=SIGKILL, so it dies with the supervisor even after `kill -9`. SIGTERM or
SIGINT to the supervisor is passed to the child as SIGTERM; the supervisor waits for it
(SIGKILL after `stop_timeout_s`) and exits 0.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_S = 0.2
READY_FILE_ENV = "LOOPE_SERVE_READY_FILE"


@dataclass(frozen=True)
class RestartPolicy:
    """When to start a dead server again, and when to stop trying."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    healthy_after_s: float = 60.0
    max_failures: int = 5
    failure_window_s: float = 120.0
    stop_timeout_s: float = 45.0


def exit_code(returncode: int) -> int:
    """The shell's exit code for a child's return code (128 + N for a death by signal N)."""
    return returncode if returncode >= 0 else 128 - returncode


def exit_reason(returncode: int) -> str:
    """A child's return code in words: `exit code 3` or `killed by SIGKILL`."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def bind_error(host: str, port: int) -> OSError | None:
    """Why `host:port` cannot be listened on now (bound as uvicorn binds), or None if it can.

    Checked before a server is started, so a port in use is refused in a moment instead of
    after the server's startup (migrations, Ray) has run for nothing.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as error:
        return error
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            return error
    return None


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive SIGKILL when its parent dies (Linux only).

    libc is resolved here, in the parent, so the forked child only makes the one call.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent:  # the parent died before the call: follow it now
            os._exit(127)

    return arm


class Supervisor:
    """Runs `command` as a child, restarting it by `policy`, until told to stop or giving up."""

    def __init__(self, command: list[str], policy: RestartPolicy | None = None) -> None:
        self.command = command
        self.policy = policy or RestartPolicy()
        self.child: subprocess.Popen | None = None
        self.stop_signal: int | None = None
        self.told_pid: int | None = None
        self.failures: deque[float] = deque()
        self.ready_file: Path | None = None
        self.was_ready = False

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop supervising and pass SIGTERM to the child (safe from a signal handler)."""
        self.stop_signal = signum
        child = self.child
        if child is not None and child.poll() is None:
            self.told_pid = child.pid
            child.send_signal(signal.SIGTERM)

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the supervisor and its child."""

        def handle(signum: int, frame: FrameType | None) -> None:
            self.request_stop(signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handle)

    def run(self) -> int:
        """Supervise until stopped or the child exits 0 (0), until too many failures (1), or
        until the first child dies before it was ever ready (that child's exit code)."""
        with tempfile.TemporaryDirectory(prefix="loope-serve-") as scratch:
            self.ready_file = Path(scratch) / "ready"
            return self._supervise()

    def _supervise(self) -> int:
        delay = self.policy.first_delay_s
        while self.stop_signal is None:
            started = time.monotonic()
            returncode = self._run_child()
            if self.stop_signal is not None:
                break
            if returncode == 0:
                logger.info("the server exited by itself with code 0; not restarting it")
                return 0
            if not self.was_ready:
                logger.error(
                    "the server could not start (%s): see the lines above", exit_reason(returncode)
                )
                return exit_code(returncode)
            if time.monotonic() - started >= self.policy.healthy_after_s:
                delay = self.policy.first_delay_s
            if self._too_many_failures(exit_reason(returncode)):
                return 1
            logger.warning(
                "the server died (%s); restarting it in %.1f s", exit_reason(returncode), delay
            )
            self._sleep(delay)
            delay = min(delay * 2, self.policy.max_delay_s)
        return self._stopped()

    def _run_child(self) -> int:
        """Start the child and wait for it, noting when it becomes ready; its return code."""
        assert self.ready_file is not None, "_run_child runs inside run()"
        self.ready_file.unlink(missing_ok=True)
        env = {**os.environ, READY_FILE_ENV: str(self.ready_file)}
        self.child = subprocess.Popen(
            self.command, env=env, preexec_fn=die_with_parent(), process_group=0
        )
        logger.info("started the server (pid %d)", self.child.pid)
        if self.stop_signal is not None and self.told_pid != self.child.pid:
            self.child.send_signal(signal.SIGTERM)  # the stop came while the child was forking
        while True:
            try:
                returncode = self.child.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                self._note_ready()
                continue
            self._note_ready()  # it may have become ready just before it died
            return returncode

    def _note_ready(self) -> None:
        if not self.was_ready and self.ready_file is not None and self.ready_file.exists():
            self.was_ready = True
            logger.info("the server is up (pid %d)", self.child.pid if self.child else -1)

    def _too_many_failures(self, reason: str) -> bool:
        """Count a failure; True (and say so) when the window holds `max_failures` of them."""
        now = time.monotonic()
        self.failures.append(now)
        while self.failures and now - self.failures[0] > self.policy.failure_window_s:
            self.failures.popleft()
        if len(self.failures) < self.policy.max_failures:
            return False
        logger.error(
            "the server died (%s), %d times within %.0f s; giving up (see its output above)",
            reason,
            len(self.failures),
            self.policy.failure_window_s,
        )
        return True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.stop_signal is None and time.monotonic() < deadline:
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def _stopped(self) -> int:
        """Wait (bounded) for the child told to stop; kill it if it overstays. Always 0."""
        child = self.child
        if child is not None and child.poll() is None:
            try:
                child.wait(timeout=self.policy.stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "the server did not stop within %.0f s; killing it", self.policy.stop_timeout_s
                )
                child.kill()
                child.wait()
        name = signal.Signals(self.stop_signal or signal.SIGTERM).name
        logger.info("stopped by %s", name)
        return 0


def supervise(command: list[str], policy: RestartPolicy | None = None) -> int:
    """Run `command` under a Supervisor with signal handlers installed; its exit code."""
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s loope serve: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    supervisor = Supervisor(command, policy)
    supervisor.install_signal_handlers()
    return supervisor.run()


def serve_app(app: Any, host: str, port: int) -> int:
    """Run an ASGI app under uvicorn; mark the child ready once it listens. Its exit code:
    0 after a normal stop, 3 (uvicorn's start failure) when it never listened."""
    import uvicorn

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and (marker := os.environ.get(READY_FILE_ENV)):
                Path(marker).touch()

    server = ReadyServer(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    server.run()
    return 0 if server.started else 3

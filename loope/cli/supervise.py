"""Keep `loope serve`'s server process running.

The server (API, dispatcher, Ray driver) is one process. Ray ends a driver that loses its
cluster: it aborts it when the head comes back as a new cluster (`WrongClusterID`) and
exits it when the head stays unreachable past its reconnect timeout. `loope serve`
therefore runs the server as a child and starts it again when it dies unexpectedly (a
non-zero exit, or a signal the supervisor did not send), after a back-off that doubles from
`first_delay_s` to `max_delay_s` and returns to `first_delay_s` once a child has lived
`healthy_after_s`. After `max_failures` failures within `failure_window_s` it gives up with
exit code 1, so a broken configuration does not loop forever.

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
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_S = 0.2


@dataclass(frozen=True)
class RestartPolicy:
    """When to start a dead server again, and when to stop trying."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    healthy_after_s: float = 60.0
    max_failures: int = 5
    failure_window_s: float = 120.0
    stop_timeout_s: float = 45.0


def exit_reason(returncode: int) -> str:
    """A child's return code in words: `exit code 3` or `killed by SIGKILL`."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


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
        """Supervise until stopped or the child exits 0 (0), or until too many failures (1)."""
        delay = self.policy.first_delay_s
        while self.stop_signal is None:
            started = time.monotonic()
            returncode = self._run_child()
            if self.stop_signal is not None:
                break
            if returncode == 0:
                logger.info("the server exited by itself with code 0; not restarting it")
                return 0
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
        """Start the child and wait for it; its return code."""
        self.child = subprocess.Popen(self.command, preexec_fn=die_with_parent(), process_group=0)
        logger.info("started the server (pid %d)", self.child.pid)
        if self.stop_signal is not None and self.told_pid != self.child.pid:
            self.child.send_signal(signal.SIGTERM)  # the stop came while the child was forking
        while True:
            try:
                return self.child.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                continue

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

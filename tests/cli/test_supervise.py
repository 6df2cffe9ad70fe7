"""The supervisor of `loope serve`, on small Python children instead of the server.

Each child is a `python -c` script that counts its starts in a file and then exits, kills
itself or sleeps; the policies are shortened to tenths of a second. The real server under
the supervisor (kill -9 of the child, of the supervisor, a Ray restart) is tested in
tests/reliability/test_cluster_faults.py.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from loope.cli.supervise import READY_FILE_ENV, RestartPolicy, Supervisor, exit_reason

FAST = RestartPolicy(
    first_delay_s=0.1, max_delay_s=0.4, healthy_after_s=1.0, max_failures=5, failure_window_s=60
)


def child(starts: Path, body: str, ready: str = "True") -> list[str]:
    """A child that appends its pid to `starts`, marks itself ready when the Python expression
    `ready` is true, then runs `body`; both see `n` = its start number."""
    script = (
        "import os, signal, sys, time\n"
        f"path = {str(starts)!r}\n"
        "with open(path, 'a') as f: f.write(f'{os.getpid()}\\n')\n"
        "n = len(open(path).read().split())\n"
        f"if {ready}: open(os.environ[{READY_FILE_ENV!r}], 'w').close()\n" + body
    )
    return [sys.executable, "-c", script]


def started_pids(starts: Path) -> list[int]:
    return [int(pid) for pid in starts.read_text().split()] if starts.exists() else []


def logged_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [float(d) for d in re.findall(r"restarting it in ([\d.]+) s", caplog.text)]


def test_exit_reasons_name_the_code_or_the_signal() -> None:
    assert exit_reason(3) == "exit code 3"
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"


def test_a_child_that_dies_is_restarted_with_the_reason_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    starts = tmp_path / "starts"
    body = "if n == 1: sys.exit(3)\nif n == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
    with caplog.at_level(logging.INFO, logger="loope.cli.supervise"):
        code = Supervisor(child(starts, body), FAST).run()
    assert code == 0 and len(started_pids(starts)) == 3
    assert "the server died (exit code 3); restarting it in 0.1 s" in caplog.text
    assert "the server died (killed by SIGKILL); restarting it in 0.2 s" in caplog.text
    assert "exited by itself with code 0; not restarting it" in caplog.text


def test_it_gives_up_after_too_many_quick_failures_with_a_doubling_back_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    starts = tmp_path / "starts"
    with caplog.at_level(logging.INFO, logger="loope.cli.supervise"):
        code = Supervisor(child(starts, "sys.exit(2)\n"), FAST).run()
    assert code == 1 and len(started_pids(starts)) == FAST.max_failures
    assert logged_delays(caplog) == [0.1, 0.2, 0.4, 0.4]
    assert "the server died (exit code 2), 5 times within 60 s; giving up" in caplog.text


def test_a_server_that_never_came_up_is_not_restarted_and_its_exit_code_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    starts = tmp_path / "starts"
    with caplog.at_level(logging.INFO, logger="loope.cli.supervise"):
        code = Supervisor(child(starts, "sys.exit(3)\n", ready="False"), FAST).run()
    assert code == 3 and len(started_pids(starts)) == 1
    assert "the server could not start (exit code 3): see the lines above" in caplog.text
    assert "restarting" not in caplog.text


def test_a_start_failure_by_a_signal_exits_128_plus_the_signal(tmp_path: Path) -> None:
    body = "os.kill(os.getpid(), signal.SIGKILL)\n"
    code = Supervisor(child(tmp_path / "starts", body, ready="False"), FAST).run()
    assert code == 128 + signal.SIGKILL


def test_after_the_server_was_up_a_child_that_fails_to_start_is_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Ray-restart case: the server was up, its next start fails while Ray comes back."""
    starts = tmp_path / "starts"
    body = "sys.exit(0 if n == 3 else 1)\n"
    with caplog.at_level(logging.INFO, logger="loope.cli.supervise"):
        code = Supervisor(child(starts, body, ready="n != 2"), FAST).run()
    assert code == 0 and len(started_pids(starts)) == 3
    assert logged_delays(caplog) == [0.1, 0.2]
    assert "could not start" not in caplog.text


def test_the_back_off_starts_over_after_a_healthy_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    starts = tmp_path / "starts"
    body = "if n == 3: time.sleep(1.2)\nsys.exit(0 if n == 4 else 1)\n"
    with caplog.at_level(logging.INFO, logger="loope.cli.supervise"):
        code = Supervisor(child(starts, body), FAST).run()
    assert code == 0 and len(started_pids(starts)) == 4
    assert logged_delays(caplog) == [0.1, 0.2, 0.1]


def test_a_stop_passes_sigterm_to_the_child_and_does_not_restart_it(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    supervisor = Supervisor(child(starts, "time.sleep(60)\n"), FAST)
    stopper = threading.Thread(target=_stop_once_started, args=(supervisor, starts))
    stopper.start()
    began = time.monotonic()
    assert supervisor.run() == 0
    stopper.join()
    assert time.monotonic() - began < 20
    assert supervisor.child is not None and supervisor.child.returncode == -signal.SIGTERM
    assert len(started_pids(starts)) == 1


def _stop_once_started(supervisor: Supervisor, starts: Path) -> None:
    deadline = time.monotonic() + 20
    while not started_pids(starts) and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.request_stop(signal.SIGTERM)


def _supervisor_process(starts: Path, body: str) -> subprocess.Popen:
    """`supervise()` (signal handlers and all) in a process of its own."""
    script = (
        "import sys\nfrom loope.cli.supervise import supervise\n"
        f"sys.exit(supervise({child(starts, body)!r}))\n"
    )
    return subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)


def _wait_started(starts: Path, supervisor: subprocess.Popen) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert supervisor.poll() is None, supervisor.stderr.read() if supervisor.stderr else ""
        if pids := started_pids(starts):
            return pids[0]
        time.sleep(0.05)
    raise AssertionError("the child did not start")


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_supervisor_takes_its_child_with_it(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    supervisor = _supervisor_process(starts, "time.sleep(120)\n")
    pid = _wait_started(starts, supervisor)
    supervisor.kill()
    supervisor.wait(timeout=10)
    assert _wait_gone(pid), f"child {pid} outlived its supervisor"


def test_sigterm_to_the_supervisor_stops_the_child_and_exits_0(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    supervisor = _supervisor_process(starts, "time.sleep(120)\n")
    pid = _wait_started(starts, supervisor)
    supervisor.send_signal(signal.SIGTERM)
    _, stderr = supervisor.communicate(timeout=30)
    assert supervisor.returncode == 0, stderr
    assert "stopped by SIGTERM" in stderr and "restarting" not in stderr
    assert _wait_gone(pid)


def _loope_serve(*options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real `loope serve` with `options`; bounded, output captured."""
    command = [sys.executable, "-m", "loope", "serve", *options]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_loope_serve_on_a_port_in_use_exits_at_once_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        began = time.monotonic()
        done = _loope_serve("--port", str(port), "--data-dir", str(tmp_path))
    assert done.returncode == 2 and time.monotonic() - began < 20
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--port {port}: cannot listen there" in lines[0], done.stderr
    assert "in use" in lines[0] and not (tmp_path / "loope.db").exists()


def test_auth_off_on_a_public_host_is_refused_in_one_line_before_anything_starts(
    tmp_path: Path,
) -> None:
    done = _loope_serve("--host", "0.0.0.0", "--data-dir", str(tmp_path), env={"LOOPE_AUTH": "off"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: LOOPE_AUTH: auth=off is allowed only on a loopback host, not '0.0.0.0'; "
        "create tokens with `loope user add NAME` and set LOOPE_AUTH=on"
    ]
    assert not (tmp_path / "loope.db").exists()


@pytest.mark.parametrize("port", ["0", "99999"])
def test_a_port_outside_1_to_65535_is_refused(port: str, tmp_path: Path) -> None:
    done = _loope_serve("--port", port, "--data-dir", str(tmp_path))
    assert done.returncode == 2 and "Invalid value for '--port'" in done.stderr


@pytest.mark.timeout(180)
def test_sigterm_stops_a_real_loope_serve_with_ray_without_an_error_logged(tmp_path: Path) -> None:
    """Ray's own SIGTERM handler (SystemExit wherever the server is) is not left in place."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "loope", "serve", "--port", str(port), "--data-dir",
               str(tmp_path), "--num-cpus", "1"]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            if _answers(f"http://127.0.0.1:{port}/api/v1/health"):
                break
            time.sleep(0.5)
        assert server.poll() is None, "the server did not come up"
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, stderr
    assert "stopped by SIGTERM" in stderr
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False

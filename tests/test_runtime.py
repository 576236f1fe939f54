"""run_node's bounded stop (ros_nodes/runtime.py) with real processes and real rclpy/DDS: a clean stop on
SIGINT/SIGTERM, the watchdog forcing out a node whose stop hangs (never before its grace period), a second
signal forcing it at once, the kernel backstop when no Python thread can run, and the parent-death watcher.
The stuck node is tests/slow_stop_node.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from ros_nodes.paths import dds_env  # noqa: E402

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
SLOW_STOP_NODE = Path(__file__).with_name("slow_stop_node.py")
FORCED = "forcing exit with status"
START_TIMEOUT_S = 120.0  # rclpy + DDS start-up on a loaded 2-core machine
MARGIN_S = 30.0  # allowed lateness of an exit on a loaded machine; the tests' grace periods are far below


def _slow_stop(log: Path, stop: str, grace_s: float, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(SLOW_STOP_NODE), "--stop", stop, *extra, "--ros-args",
           "-r", f"__node:=slow_stop_{os.getpid()}", "-p", f"shutdown_grace_s:={grace_s}"]
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dds_env(), cwd=REPO)


def _wait_for_text(log: Path, text: str, proc: subprocess.Popen | None = None,
                   timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before printing {text!r}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} within {timeout_s} s:\n{log.read_text()}")
        time.sleep(0.1)


def _time_exit(proc: subprocess.Popen, timeout_s: float) -> tuple[int, float]:
    """Wait for ``proc`` to exit; returns its exit status and the seconds waited (killed after ``timeout_s``)."""
    t0 = time.monotonic()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running after {timeout_s} s") from None
    return code, time.monotonic() - t0


def _signal_and_time_exit(proc: subprocess.Popen, sig: int, timeout_s: float) -> tuple[int, float]:
    """Send ``sig``; returns the exit status and the seconds from the signal to the exit."""
    proc.send_signal(sig)
    return _time_exit(proc, timeout_s)


@pytest.fixture
def procs():
    """Processes to kill when a test ends (a failing test must not leave a node behind)."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_node_stops_cleanly_without_the_watchdog(tmp_path, procs, sig):
    log = tmp_path / "node.log"
    cmd = [sys.executable, "-m", "ros_nodes.sensor_health", "--ros-args", "-r", f"__node:=health_{os.getpid()}",
           "-p", "shutdown_grace_s:=20.0"]
    with log.open("w") as out:
        procs.append(proc := subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dds_env(), cwd=REPO))
    _wait_for_text(log, "watching", proc)
    code, _ = _signal_and_time_exit(proc, sig, 20.0 + MARGIN_S)
    text = log.read_text()
    assert code == 0, text
    assert f"stopping on {sig.name}" in text and FORCED not in text, text


def test_a_slow_cleanup_finishes_before_the_watchdog(tmp_path, procs):
    """Like a recorder closing its bag: a hook that takes a while still completes, and the exit is clean."""
    log, mark = tmp_path / "node.log", tmp_path / "closed.txt"
    procs.append(proc := _slow_stop(log, "2.0", 10.0, "--mark", str(mark)))
    _wait_for_text(log, "ready", proc)
    code, elapsed = _signal_and_time_exit(proc, signal.SIGTERM, 10.0 + MARGIN_S)
    text = log.read_text()
    assert code == 0 and FORCED not in text, text
    assert mark.read_text() == "closed\n"
    assert elapsed >= 2.0


def test_a_stuck_stop_is_forced_out_after_the_grace_period(tmp_path, procs):
    grace = 3.0
    log = tmp_path / "node.log"
    procs.append(proc := _slow_stop(log, "forever", grace))
    _wait_for_text(log, "ready", proc)
    code, elapsed = _signal_and_time_exit(proc, signal.SIGTERM, grace + MARGIN_S)
    text = log.read_text()
    assert code == 128 + signal.SIGTERM, text
    assert elapsed >= grace, f"forced out {elapsed:.2f} s after SIGTERM, before the {grace} s grace period"
    assert "stopping" in text and "the graceful shutdown is stuck" in text and f"{FORCED} 143" in text, text
    assert "slow_stop_node.py" in text.split(FORCED, 1)[1], "the stack dump should show where it hung"


def _stopping(log: Path, stop: str, grace_s: float, procs: list) -> subprocess.Popen:
    """A slow-stop node sent SIGTERM once it runs, returned once its stop hook has started."""
    procs.append(proc := _slow_stop(log, stop, grace_s))
    _wait_for_text(log, "ready", proc)
    proc.send_signal(signal.SIGTERM)
    _wait_for_text(log, "stopping", proc, MARGIN_S)
    return proc


def test_a_second_signal_forces_the_exit_at_once(tmp_path, procs):
    log = tmp_path / "node.log"
    proc = _stopping(log, "forever", 300.0, procs)
    code, _ = _signal_and_time_exit(proc, signal.SIGINT, MARGIN_S)  # far less than the grace period
    text = log.read_text()
    assert code == 128 + signal.SIGINT, text
    assert "SIGINT while stopping" in text and f"{FORCED} 130" in text, text


def test_a_stop_holding_the_gil_is_ended_by_the_kernel_backstop(tmp_path, procs):
    """No Python thread can run: faulthandler dumps the stacks after grace + 1 s, SIGALRM ends it after + 2 s."""
    grace = 2.0
    log = tmp_path / "node.log"
    proc = _stopping(log, "gil", grace, procs)
    code, _ = _time_exit(proc, grace + 2 + MARGIN_S)
    text = log.read_text()
    assert code == -signal.SIGALRM, text
    assert FORCED not in text and "Timeout (" in text and "slow_stop_node.py" in text, text


_PARENT = """
import ctypes, signal, subprocess, sys
prctl = ctypes.CDLL(None).prctl  # resolved before fork: the child must not dlopen before exec

def die_with_parent_but_never_see_sigterm():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by exec and every thread
    prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG, as perception launch does

child = subprocess.Popen(sys.argv[1:], preexec_fn=die_with_parent_but_never_see_sigterm)
print(child.pid, flush=True)
child.wait()
"""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_node_goes_away_with_its_parent_even_if_sigterm_is_never_handled(tmp_path, procs):
    log = tmp_path / "node.log"
    cmd = [sys.executable, "-c", _PARENT, sys.executable, str(SLOW_STOP_NODE), "--stop", "0", "--ros-args",
           "-r", f"__node:=orphan_{os.getpid()}"]
    with log.open("w") as out:
        procs.append(parent := subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dds_env(), cwd=REPO))
    _wait_for_text(log, "ready", parent)
    node_pid = int(log.read_text().split()[0])
    try:
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + MARGIN_S
        while _running(node_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text()
        assert not _running(node_pid), f"node {node_pid} outlived its parent:\n{text}"
        assert f"stopping on the exit of parent process {parent.pid}" in text and FORCED not in text, text
    finally:
        if _running(node_pid):
            os.kill(node_pid, signal.SIGKILL)

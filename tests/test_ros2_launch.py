"""The vehicle path: the package colcon-built into a workspace, both launch files run by the real ROS 2 launch
framework (``launch`` + ``launch_ros`` from ../shared/vendor/ros2_launch, what ``ros2 launch`` runs).

Checks every node reaches ready, the replay plays the bag (and records an answer for each cloud), and SIGINT
stops every node cleanly ("process has finished cleanly", nothing escalated to SIGTERM). Skips with a reason
when the vendored sources (or colcon) are absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("trustworthy_perception_msgs.msg", reason="interface package not built (make msgs)")

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
VENDOR = REPO.parent / "shared" / "vendor" / "ros2_launch"
VENV = Path(sys.prefix)
PY_PACKAGES = ("launch", "launch_xml", "launch_yaml", "launch_ros")
STARTUP_S = 240.0  # four nodes loading models on a loaded 2-core machine
RUNNER = """
import sys
import launch
from ament_index_python.packages import get_package_share_directory
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import AnyLaunchDescriptionSource

share = get_package_share_directory("trustworthy_perception")
args = [tuple(a.split(":=", 1)) for a in sys.argv[2:]]
ls = launch.LaunchService(noninteractive=True)
ls.include_launch_description(launch.LaunchDescription([
    IncludeLaunchDescription(AnyLaunchDescriptionSource(f"{share}/launch/{sys.argv[1]}"), launch_arguments=args)]))
sys.exit(ls.run())
"""


def _run(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> None:
    with log.open("w") as f:
        res = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{log.read_text()[-4000:]}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """launch/launch_ros installed into a folder of their own, composition_interfaces and the package built with
    colcon into a workspace; returns (workspace, the environment a sourced ``install/setup.sh`` gives)."""
    if not all((VENDOR / p / "setup.py").is_file() for p in PY_PACKAGES):
        pytest.skip(f"the ROS 2 launch framework sources are absent ({VENDOR})")
    colcon = VENV / "bin" / "colcon"
    if not colcon.is_file():
        pytest.skip("colcon is not installed in this environment (make setup)")
    ws = tmp_path_factory.mktemp("ros2_ws")
    src = ws / "src"
    for name in (*PY_PACKAGES, "composition_interfaces"):  # a copy: the vendored folder stays untouched
        shutil.copytree(VENDOR / name, src / name, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
          str(ws / "pylib"), *(str(src / p) for p in PY_PACKAGES)], env, ws / "pip.log", 600)
    env.update(CMAKE_PREFIX_PATH=str(VENV), AMENT_PREFIX_PATH=str(VENV), PATH=f"{VENV / 'bin'}:{env['PATH']}",
               MAKEFLAGS="-j2")
    _run([str(colcon), "--log-base", str(ws / "log"), "build", "--paths", str(src / "composition_interfaces"),
          str(REPO), "--build-base", str(ws / "build"), "--install-base", str(ws / "install"),
          "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"], env, ws / "build.log",
         900)
    # The environment of `source install/setup.sh`, plus the launch packages and the venv's own ROS wheels.
    out = subprocess.run(["bash", "-c", f"source {ws / 'install' / 'setup.sh'} && env -0"], env=env,
                         capture_output=True, check=True, timeout=60).stdout.decode()
    sourced = dict(line.split("=", 1) for line in out.split("\0") if "=" in line)
    sourced["AMENT_PREFIX_PATH"] = f"{sourced['AMENT_PREFIX_PATH']}:{ws / 'pylib'}:{VENV}"
    sourced["PYTHONPATH"] = f"{ws / 'pylib'}:{sourced.get('PYTHONPATH', '')}"
    sourced.setdefault("OMP_NUM_THREADS", "2")
    (ws / "run_launch.py").write_text(RUNNER)
    return ws, sourced


class Launch:
    """``ros2 launch trustworthy_perception FILE ARGS`` (the framework's LaunchService) in its own session."""

    def __init__(self, ws: Path, env: dict[str, str], file: str, log: Path, *args: str) -> None:
        self.log = log
        self._f = log.open("w")
        self.proc = subprocess.Popen([sys.executable, str(ws / "run_launch.py"), file, *args], env=env,
                                     stdout=self._f, stderr=subprocess.STDOUT, cwd=ws, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if predicate(self.text()):
                return True
            time.sleep(0.5)
        return predicate(self.text())

    def interrupt(self, timeout_s: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self._f.close()


NODES = ("fusion_detector", "sensor_health", "ood_monitor", "crowd_counter")
READY = ("fusion_detector]: ready:", "sensor_health]: watching", "ood_monitor]: ready:", "crowd_counter]: counting")


def _stopped_cleanly(text: str, nodes: tuple[str, ...]) -> None:
    assert "escalating to 'SIGTERM'" not in text and "process has died" not in text, text[-4000:]
    for node in nodes:
        assert f"[{node}-" in text and any(f"[{node}-" in line and "process has finished cleanly" in line
                                            for line in text.splitlines()), f"{node}:\n{text[-4000:]}"


def test_vehicle_launch_starts_every_node_and_sigint_stops_them(workspace, tmp_path):
    ws, env = workspace
    run = Launch(ws, env, "perception.launch.yaml", tmp_path / "vehicle.log")
    ok = run.wait_for(lambda t: all(r in t for r in READY), STARTUP_S)
    code = run.interrupt()
    text = run.text()
    assert ok, text[-4000:]
    assert f"{ws}/install/trustworthy_perception/share/trustworthy_perception/models" in text  # the package share
    assert code == 0, text[-4000:]
    _stopped_cleanly(text, NODES)


def test_replay_launch_plays_the_bag_through_the_graph(workspace, default_drive, tmp_path):
    from perception.io.bag import LIDAR_TOPIC, BagReader
    from perception.io.recording import read_recording

    ws, env = workspace
    with BagReader(default_drive) as reader:
        clouds = reader.info().topics[LIDAR_TOPIC].count
    record = tmp_path / "recording"
    run = Launch(ws, env, "replay.launch.yaml", tmp_path / "replay.log", f"bag:={default_drive}", "record:=true",
                 f"record_bag:={record}")
    ready = run.wait_for(lambda t: "every awaited node is ready" in t, STARTUP_S)
    played = ready and run.wait_for(lambda t: "finished:" in t, 120)
    time.sleep(15.0)  # the detector's lossless queue drains
    code = run.interrupt()
    text = run.text()
    assert ready and played, text[-4000:]
    assert code == 0, text[-4000:]
    _stopped_cleanly(text, (*NODES, "bag_player", "bag_recorder"))
    rec = read_recording(record)
    assert sum(f.detections_ns is not None for f in rec.frames) == clouds, rec.counts

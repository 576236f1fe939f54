"""The bag player counts only its own graph's ready announcements (real rclpy/DDS across processes).

A second graph on the same ROS domain (another replay still running) announces nodes of the same names; the
player must not take those for its own and start early.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ros_nodes.paths import GRAPH_ID_ENV, dds_env
from ros_nodes.probe import stop_process

REPO = Path(__file__).resolve().parents[1]


def _start(args: list[str], graph: str, domain: str, log: Path) -> subprocess.Popen:
    env = {**dds_env(), "ROS_DOMAIN_ID": domain, GRAPH_ID_ENV: graph, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO, start_new_session=True)


def _wait_for(log: Path, text: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text():
            return True
        time.sleep(0.1)
    return False


def test_player_ignores_another_graphs_nodes_and_waits_for_its_own(default_drive, tmp_path):
    domain = str(101 + os.getpid() % 100)  # no cross-talk with other test runs
    health = ["ros_nodes.sensor_health", "--ros-args", "-r", "__ns:=/perception"]
    procs = []
    try:
        procs.append(_start(health, "other", domain, tmp_path / "foreign.log"))
        assert _wait_for(tmp_path / "foreign.log", "watching", 60), (tmp_path / "foreign.log").read_text()
        player_log = tmp_path / "player.log"
        procs.append(_start(["ros_nodes.bag_player", "--ros-args", "-r", "__ns:=/sensing", "-p",
                             f"bag:={default_drive}", "-p", "wait_for_nodes:=/perception/sensor_health", "-p",
                             "wait_timeout_s:=120.0"], "mine", domain, player_log))
        assert _wait_for(player_log, "belongs to graph 'other'", 60), player_log.read_text()
        time.sleep(2.0)  # longer than the player's settle time: it must still be waiting
        assert "every awaited node is ready" not in player_log.read_text()
        procs.append(_start(health, "mine", domain, tmp_path / "own.log"))
        assert _wait_for(player_log, "every awaited node is ready", 60), player_log.read_text()
    finally:
        for p in procs:
            stop_process(p, 15)

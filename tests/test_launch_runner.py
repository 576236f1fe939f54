"""The YAML launch runner (ros_nodes.launch_runner) and the launch / RViz files, without starting processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from perception.errors import ConfigError
from ros_nodes.launch_runner import find_launch_file, parse_cli_arguments, plan_launch

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "t.launch.yaml"
    p.write_text(text)
    return p


def _remaps(node) -> dict[str, str]:
    return dict(node.remaps)


def test_vehicle_launch_plans_detector_and_monitors_with_sensing_remaps():
    plan = plan_launch(LAUNCH / "perception.launch.yaml")
    assert [n.name for n in plan.nodes] == ["fusion_detector", "sensor_health", "ood_monitor", "crowd_counter"]
    det, health, ood, crowd = plan.nodes
    assert _remaps(ood)["~/input/features"] == _remaps(det)["~/output/features"] == "/perception/features"
    assert ood.params["model_dir"] == det.params["model_dir"]
    assert _remaps(crowd)["~/input/image"] == _remaps(det)["~/input/image"]
    assert crowd.params["model_dir"] == str(REPO / "models" / "crowd_default")
    assert det.params["reliable_input"] == "false"
    assert det.namespace == "perception"
    assert _remaps(det)["~/input/pointcloud"] == "/sensing/lidar/points"
    assert _remaps(det)["~/input/image"] == "/sensing/camera/image_raw"
    assert _remaps(det)["~/output/objects"] == "/perception/detections"
    assert det.params["model_dir"] == str(REPO / "models" / "fusion_default")
    assert det.param_files == [str(REPO / "config" / "fusion_detector.param.yaml")]
    cmd = det.command("python")
    assert cmd[:3] == ["python", "-m", "ros_nodes.fusion_detector"]
    i = cmd.index("--ros-args")
    assert cmd[i + 1:i + 3] == ["-r", "__node:=fusion_detector"] and "__ns:=/perception" in cmd
    assert "~/input/pointcloud:=/sensing/lidar/points" in cmd and "use_sim_time:=false" in cmd
    assert _remaps(health)["~/input/image"] == "/sensing/camera/image_raw"


def test_arguments_override_and_conditionals():
    plan = plan_launch(LAUNCH / "perception.launch.yaml",
                       {"backend": "onnx", "sensor_health": "false", "ood_monitor": "false",
                        "crowd_counter": "false", "image_topic": "/cam"})
    assert [n.name for n in plan.nodes] == ["fusion_detector"]
    assert plan.nodes[0].params["backend"] == "onnx"
    assert _remaps(plan.nodes[0])["~/input/image"] == "/cam"


def test_replay_launch_includes_the_vehicle_launch_with_sim_time(tmp_path):
    plan = plan_launch(LAUNCH / "replay.launch.yaml", {"bag": str(tmp_path), "rate": "0.5"})
    assert [n.name for n in plan.nodes] == ["bag_player", "fusion_detector", "sensor_health", "ood_monitor",
                                            "crowd_counter"]
    player = plan.nodes[0]
    # A replay for evaluation must not lose frames: the sensor subscriptions are reliable.
    assert plan.nodes[1].params["reliable_input"] == plan.nodes[2].params["reliable_input"] == "true"
    assert player.params["bag"] == str(tmp_path) and player.params["rate"] == "0.5"
    assert player.params["skip_topics"] == "''"  # empty string stays a string parameter
    assert all(n.params["use_sim_time"] == "true" for n in plan.nodes[1:])
    default = plan_launch(LAUNCH / "replay.launch.yaml").nodes[0].params["bag"]
    assert default == str(REPO / "data" / "default_drive")
    names = {a.name for a in plan_launch(LAUNCH / "replay.launch.yaml").args}
    assert {"bag", "rate", "loop", "model_dir", "image_topic"} <= names


@pytest.mark.parametrize("text, match", [
    ("launch:\n- executable: {cmd: ls}\n", "unsupported launch entity"),
    ("launch:\n- node: {pkg: other_pkg, exec: x}\n", "only package"),
    ("launch:\n- node: {pkg: trustworthy_perception, exec: no_such_node}\n", "no node module"),
    ("launch:\n- node: {pkg: trustworthy_perception, exec: sensor_health, name: $(var nope)}\n", "undefined"),
    ("launch:\n- arg: {name: a, default: $(eval 1+1)}\n", "unsupported substitution"),
    ("launch:\n- arg: {name: required_one}\n", "no default"),
    ("launch:\n- node: {pkg: trustworthy_perception, exec: sensor_health, color: red}\n", "unsupported node key"),
    ("launch:\n- node: {pkg: trustworthy_perception, exec: sensor_health, param: [{from: /no/such.yaml}]}\n",
     "parameter file not found"),
    ("nodes: []\n", "top-level 'launch:'"),
    ("launch:\n- arg: {name: flag, default: maybe}\n- let: {name: x, value: '1', if: $(var flag)}\n", "true/false"),
])
def test_bad_launch_files_are_rejected_naming_the_entry(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as err:
        plan_launch(path)
    assert str(path) in str(err.value)


def test_substitutions_env_dirname_and_let(tmp_path, monkeypatch):
    monkeypatch.setenv("TP_TEST_NS", "robot1")
    path = _write(tmp_path, """
launch:
- arg: {name: suffix, default: "_a"}
- let: {name: full, value: "health$(var suffix)"}
- node:
    pkg: trustworthy_perception
    exec: sensor_health
    name: $(var full)
    namespace: $(env TP_TEST_NS)
    param: [{name: note, value: "$(dirname)/$(env TP_UNSET_VAR fallback)"}, {name: period, value: 0.5}]
    args: "--flag 'two words'"
""")
    node = plan_launch(path, {"suffix": "_b"}).nodes[0]
    assert node.name == "health_b" and node.namespace == "robot1"
    assert node.params == {"note": f"{tmp_path}/fallback", "period": "0.5"}
    assert node.args == ["--flag", "two words"]


def test_unknown_cli_argument_and_bad_syntax():
    with pytest.raises(ConfigError, match="unknown launch argument"):
        plan_launch(LAUNCH / "perception.launch.yaml", {"modle_dir": "x"})
    with pytest.raises(ConfigError, match="NAME:=VALUE"):
        parse_cli_arguments(["rate=2"])
    assert parse_cli_arguments(["rate:=2", "bag:=/a:=b"]) == {"rate": "2", "bag": "/a:=b"}
    assert find_launch_file("replay.launch.yaml") == LAUNCH / "replay.launch.yaml"
    with pytest.raises(ConfigError):
        find_launch_file("nope.launch.yaml")


def test_cli_prints_commands_without_starting_anything():
    out = subprocess.run([sys.executable, "-m", "perception.cli", "launch", "--print", "replay.launch.yaml",
                          "rate:=2.0"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 5 and "ros_nodes.bag_player" in lines[0] and "rate:=2.0" in lines[0]
    bad = subprocess.run([sys.executable, "-m", "perception.cli", "launch", "--print", "replay.launch.yaml",
                          "rat:=2"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "rat" in bad.stderr


# ---------------------------------------------------------------------- RViz config
def _rviz_topics() -> list[str]:
    doc = yaml.safe_load((LAUNCH / "perception.rviz").read_text())
    return [d["Topic"]["Value"] for d in doc["Visualization Manager"]["Displays"] if "Topic" in d]


def test_rviz_config_fixed_frame_and_displays():
    doc = yaml.safe_load((LAUNCH / "perception.rviz").read_text())
    vm = doc["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "base_link"
    classes = [d["Class"] for d in vm["Displays"]]
    assert classes.count("rviz_default_plugins/Image") == 3  # two attention images + crowd density
    assert {"rviz_default_plugins/PointCloud2", "rviz_default_plugins/MarkerArray"} <= set(classes)


def test_every_rviz_topic_is_an_output_of_the_replay_graph():
    """Statically: each displayed topic is a remapped output of our nodes or a topic the bag player replays."""
    plan = plan_launch(LAUNCH / "replay.launch.yaml")
    outputs = {dst for n in plan.nodes for src, dst in n.remaps if "output" in src}
    from perception.io.bag import TOPIC_TYPES  # what bags hold, replayed by bag_player on the same names

    published = outputs | set(TOPIC_TYPES)
    missing = [t for t in _rviz_topics() if t not in published]
    assert not missing, f"RViz shows topics nothing publishes: {missing}"


# ---------------------------------------------------------------------- processes
def _pids_with_parent(ppid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                out.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return out


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.ros
def test_nodes_die_with_a_killed_runner_and_output_is_prefixed(tmp_path):
    """Even SIGKILL of the runner (no chance to clean up) leaves no orphan node behind."""
    import os
    import signal
    import time

    from ros_nodes.paths import dds_env

    path = _write(tmp_path, """
launch:
- node: {pkg: trustworthy_perception, exec: sensor_health, name: health_a, namespace: t1}
- node: {pkg: trustworthy_perception, exec: sensor_health, name: health_b, namespace: t1}
""")
    log = tmp_path / "out.log"
    with log.open("w") as out:
        env = {**dds_env(), "ROS_DOMAIN_ID": str(1 + os.getpid() % 100)}  # no cross-talk with other test runs
        runner = subprocess.Popen([sys.executable, "-m", "perception.cli", "launch", str(path)], stdout=out,
                                  stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and log.read_text().count("watching") < 2:
            time.sleep(0.2)
        text = log.read_text()
        assert "[health_a] " in text and "[health_b] " in text, text
        nodes = _pids_with_parent(runner.pid)
        assert len(nodes) == 2
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        deadline = time.monotonic() + 30  # a loaded 2-core machine can take a while to tear rclpy down
        while time.monotonic() < deadline and any(_running(p) for p in nodes):
            time.sleep(0.1)
        assert not [p for p in nodes if _running(p)], "orphaned node processes"
    finally:
        for pid in _pids_with_parent(runner.pid):
            os.kill(pid, signal.SIGKILL)
        if runner.poll() is None:
            runner.kill()

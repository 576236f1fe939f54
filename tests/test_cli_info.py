"""``perception`` CLI shape and ``perception info`` (subprocesses, real files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from perception.cli import COMMANDS, build_parser, main
from perception.frame import Box3D, Frame
from perception.io.bag import CAMERA_INFO_TOPIC, GT_TOPIC, IMAGE_TOPIC, LIDAR_TOPIC, BagWriter

PERCEPTION = Path(sys.executable).with_name("perception")  # the console script next to the venv's python


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(PERCEPTION), *args], capture_output=True, text=True, timeout=timeout)


def test_every_command_module_has_the_contract():
    names = {m.__name__.rsplit(".", 1)[1] for m in COMMANDS}
    assert {"sim", "info", "demo"} <= names
    parser = build_parser()
    for module in COMMANDS:
        assert callable(module.add_parser) and callable(module.run)
    args = parser.parse_args(["info", "x", "--json", "-v"])
    assert args.func.__module__ == "perception.commands.info" and args.verbose == 1


def test_info_on_real_kitti_json(kitti_root):
    proc = _run("info", str(kitti_root), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["format"] == "kitti" and doc["frames"] == 3
    assert doc["topics"] == {LIDAR_TOPIC: 3, IMAGE_TOPIC: 3, CAMERA_INFO_TOPIC: 3, GT_TOPIC: 3}
    assert doc["classes"] == {"Car": 2, "Cyclist": 1, "DontCare": 4, "Misc": 1, "Pedestrian": 1, "Truck": 1}
    assert doc["points_per_frame"]["min"] == 115384 and doc["points_per_frame"]["max"] == 126891


def test_info_on_a_bag_text(sim_rig, tmp_path, capsys):
    path = tmp_path / "bag"
    with BagWriter(path, sim_rig, storage="sqlite3") as w:
        for i in range(5):
            w.write(Frame(points=np.ones((100 + i, 4)), rig=sim_rig, stamp_ns=i * 50_000_000,
                          boxes=[Box3D("Cyclist", [5, 1, -1], [1.8, 0.6, 1.7], 0.0)]))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "frames: 5 (0 with image)" in out and "sqlite3" in out
    assert "/sensing/lidar/points                   5  20.0 Hz" in out
    assert "objects: Cyclist 5" in out


def test_errors_are_one_line_with_exit_status_2(kitti_root, tmp_path):
    broken = tmp_path / "kitti"
    for sub in ("velodyne", "image_2", "calib"):
        (broken / sub).mkdir(parents=True)
    (broken / "velodyne" / "000000.bin").write_bytes(b"\0" * 17)
    proc = subprocess.run([sys.executable, "-m", "perception.cli", "info", str(broken)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {broken}/velodyne/000000.bin: size 17 bytes is not a multiple of 16 (x y z intensity float32): "
        "truncated?")



def test_missing_path_is_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'}: no such file or folder"

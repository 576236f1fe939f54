"""``perception sim`` / ``perception demo`` end to end with the real simulator (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perception.cli import main
from perception.io import open_frames
from perception.io.bag import CAMERA_INFO_TOPIC, GT_TOPIC, LIDAR_TOPIC, SENSOR_TOPICS

PERCEPTION = Path(sys.executable).with_name("perception")


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(PERCEPTION), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # 20 frames as the CLI contract asks: ~15-60 s depending on the shared CPUs' load
def test_sim_bag_then_info(tmp_path):
    out = tmp_path / "test_bag"
    proc = _run("sim", "--split", "test", "--frames", "20", "--format", "bag", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    proc = _run("info", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["frames"] == 20
    for topic in (*SENSOR_TOPICS, GT_TOPIC):
        assert doc["topics"][topic] == 20, topic
    assert doc["rates_hz"][LIDAR_TOPIC] == 10.0
    assert doc["points_per_frame"]["min"] > 10_000
    assert sum(doc["classes"].values()) > 0


def test_sim_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "metadata.yaml").write_text("keep")
    assert main(["sim", "--split", "val", "--frames", "2", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {out}: output exists and is not empty; pass --force (force=True) to replace it")
    assert (out / "metadata.yaml").read_text() == "keep"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep")
    assert main(["sim", "--split", "val", "--frames", "2", "--out", str(notes), "--force"]) == 2
    assert "refusing to delete" in capsys.readouterr().err
    assert (notes / "todo.txt").read_text() == "keep"


def test_sim_kitti_is_deterministic_and_readable(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["sim", "--split", "calib", "--frames", "2", "--seed", "3", "--format", "kitti", "--out", str(out),
                     "--workers", "1"]) == 0
        runs.append(list(open_frames(out)))
    (a0, a1), (b0, _) = runs
    np.testing.assert_array_equal(a0.points, b0.points)
    assert [b.label for b in a0.boxes] == [b.label for b in b0.boxes]
    assert a0.rig.name == "sim_default" and a0.image is not None
    assert not np.array_equal(a0.points, a1.points)


def test_demo_on_a_small_drive(tmp_path, capsys):
    drive = tmp_path / "drive.yaml"
    drive.write_text(f"path: {tmp_path / 'drive'}\nrig: calibration/sim_default.yaml\nsplit: test\nseed: 0\n"
                     "frames: 2\nframes_per_drive: 2\nformat: bag\nstorage: mcap\n")
    demo_args = ["demo", "--drive", str(drive), "--out", str(tmp_path / "demo"), "--workers", "1"]
    assert main(demo_args) == 0
    out = capsys.readouterr().out
    assert "generating the default drive" in out and CAMERA_INFO_TOPIC in out and "frames: 2 (2 with image)" in out
    png = tmp_path / "demo" / "summary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    assert main(demo_args) == 0  # cached: no regeneration
    assert "generating" not in capsys.readouterr().out
    assert [f.image is not None for f in open_frames(tmp_path / "drive")] == [True, True]
    drive.write_text(drive.read_text().replace("frames: 2\n", "frame: 2\n"))
    assert main(demo_args) == 2
    assert capsys.readouterr().err.strip() == f"error: {drive}:frames: missing key"


def test_default_drive_fixture_is_readable(default_drive):
    frames = list(open_frames(default_drive))
    assert len(frames) >= 2
    assert all(len(f.points) > 10_000 and f.rig.name == "sim_default" for f in frames)
    assert frames[1].stamp_ns - frames[0].stamp_ns == 100_000_000
    assert any(f.boxes for f in frames) and all(f.meta["has_labels"] for f in frames)

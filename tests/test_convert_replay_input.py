"""`perception convert` on the real KITTI drives, and the checks a bag passes before it is replayed.

Real data: ../shared/data/kitti_raw_0926_traffic (camera, no labels), kitti_raw_lidar_only (no camera, rig.yaml +
camera_missing.txt), kitti_labelled (labels; mixed calibrations). Bad input: a bag without LiDAR, an unknown
point layout, a truncated mcap (a crashed recorder) and missing metadata each give a clear DataError naming the
bag (or the readable part with what was skipped); the input bag is never modified (sha256 before and after).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perception.errors import DataError
from perception.eval.replay import check_replay_bag
from perception.io import open_frames
from perception.io.bag import GT_TOPIC, IMAGE_TOPIC, LIDAR_TOPIC, TF_STATIC_TOPIC, BagReader

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TRAFFIC, LIDAR_ONLY, LABELLED = (SHARED / n for n in ("kitti_raw_0926_traffic", "kitti_raw_lidar_only",
                                                       "kitti_labelled"))
#: kitti_labelled frames that share one calibration (000000 and 000006 have their own).
SAME_CALIB = "000001,000002,000007,000008,000009,000010"


def _need(path: Path) -> None:
    if not (path / "training" / "velodyne").is_dir():
        pytest.skip(f"real KITTI data not available at {path}")


def _convert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perception.cli", "convert", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def _sha256(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def traffic_bag(tmp_path_factory) -> Path:
    _need(TRAFFIC)
    out = tmp_path_factory.mktemp("convert") / "traffic"
    res = _convert(str(TRAFFIC), "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out


def test_kitti_raw_drive_becomes_a_bag_with_its_calibration(traffic_bag):
    from perception.io import KittiDataset

    ds = KittiDataset(TRAFFIC)
    with BagReader(traffic_bag) as reader:
        topics = reader.info().topics
        frames = list(reader.frames())
    assert topics[LIDAR_TOPIC].count == len(ds) == 20 and topics[IMAGE_TOPIC].count == 20
    assert topics[TF_STATIC_TOPIC].count == 1
    assert topics[GT_TOPIC].count == 0  # unlabelled: no ground truth rather than "no objects"
    first = ds[0]
    np.testing.assert_array_equal(frames[0].points, first.points)
    np.testing.assert_array_equal(frames[0].image, first.image)
    # The bag's rig (camera info + /tf_static) projects like the KITTI calibration.
    pts = first.points[first.points[:, 0] > 5][:200, :3]
    uv_bag, _, ok_bag = frames[0].rig.project(pts)
    uv_kitti, _, ok_kitti = first.rig.project(pts)
    assert ok_kitti.sum() > 50 and (ok_bag == ok_kitti).all()
    np.testing.assert_allclose(uv_bag[ok_bag], uv_kitti[ok_kitti], atol=1e-3)
    assert [f.stamp_ns for f in frames] == [i * 100_000_000 for i in range(20)]


def test_lidar_only_drive_and_labelled_frames(tmp_path):
    _need(LIDAR_ONLY)
    _need(LABELLED)
    res = _convert(str(LIDAR_ONLY), "--out", str(tmp_path / "lidar_only"))
    assert res.returncode == 0, res.stderr
    with BagReader(tmp_path / "lidar_only") as reader:
        assert IMAGE_TOPIC not in reader.info().topics or reader.info().topics[IMAGE_TOPIC].count == 0
        assert all(f.image is None for f in reader.frames())
    # Mixed calibrations: refused, naming the folder and the frames.
    res = _convert(str(LABELLED), "--out", str(tmp_path / "mixed"))
    assert res.returncode == 2 and "calib" in res.stderr and "000006" in res.stderr and "--ids" in res.stderr
    assert not (tmp_path / "mixed").exists()
    res = _convert(str(LABELLED), "--ids", SAME_CALIB, "--out", str(tmp_path / "labelled"))
    assert res.returncode == 0, res.stderr
    frames = list(open_frames(tmp_path / "labelled"))
    assert [f.frame_id for f in frames] == SAME_CALIB.split(",")
    assert sum(len(f.boxes) for f in frames) == 27 and all(f.meta["has_labels"] for f in frames)
    # No overwrite without --force; the reverse direction (bag -> KITTI) round-trips the labels.
    assert _convert(str(LABELLED), "--ids", SAME_CALIB, "--out", str(tmp_path / "labelled")).returncode == 2
    res = _convert(str(tmp_path / "labelled"), "--out", str(tmp_path / "kitti"))
    assert res.returncode == 0, res.stderr
    back = list(open_frames(tmp_path / "kitti"))
    assert [len(f.boxes) for f in back] == [len(f.boxes) for f in frames]


# ---------------------------------------------------------------------- bad input before a replay
def _write_bag(path: Path, topic: str, msgtype: str, msgs: list, calibration_from: Path | None = None) -> None:
    """A bag with ``msgs`` on ``topic`` (and the camera info + /tf_static of ``calibration_from``)."""
    from rosbags.rosbag2 import Reader, Writer

    from perception.io.bag import CAMERA_INFO_TOPIC, typestore

    with Writer(path, version=Writer.VERSION_LATEST) as writer:
        if calibration_from is not None:
            with Reader(calibration_from) as reader:
                keep = [c for c in reader.connections if c.topic in (CAMERA_INFO_TOPIC, TF_STATIC_TOPIC)]
                conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=typestore()) for c in keep}
                for c, t, raw in reader.messages(connections=keep):
                    writer.write(conns[c.topic], t, raw)
        conn = writer.add_connection(topic, msgtype, typestore=typestore())
        for i, msg in enumerate(msgs):
            writer.write(conn, i * 100_000_000, typestore().serialize_cdr(msg, msgtype))


def test_bad_bags_give_clear_errors_and_are_never_modified(traffic_bag, tmp_path):
    from perception.io.bag import typestore

    t = typestore().types
    # No LiDAR at all.
    no_lidar = tmp_path / "no_lidar"
    _write_bag(no_lidar, "/chatter", "std_msgs/msg/String", [t["std_msgs/msg/String"](data="hi")])
    # A cloud whose points are x y as float64: not a layout the stack reads.
    with BagReader(traffic_bag) as reader:
        lidar_frame = next(reader.frames()).rig.lidar_frame
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=lidar_frame)
    fields = [t["sensor_msgs/msg/PointField"](name=n, offset=8 * i, datatype=8, count=1) for i, n in enumerate("xy")]
    cloud = t["sensor_msgs/msg/PointCloud2"](header=header, height=1, width=2, fields=fields, is_bigendian=False,
                                             point_step=16, row_step=32, data=np.zeros(32, np.uint8), is_dense=True)
    bad_layout = tmp_path / "bad_layout"
    _write_bag(bad_layout, LIDAR_TOPIC, "sensor_msgs/msg/PointCloud2", [cloud], calibration_from=traffic_bag)
    # Missing metadata (a recorder killed before closing) and a truncated mcap (crashed mid-file).
    no_meta = tmp_path / "no_meta"
    shutil.copytree(traffic_bag, no_meta)
    (no_meta / "metadata.yaml").unlink()
    truncated = tmp_path / "truncated"
    shutil.copytree(traffic_bag, truncated)
    mcap = next(truncated.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])

    before = {p: _sha256(p) for p in (no_lidar, bad_layout, no_meta, truncated, traffic_bag)}
    for bag, expect in ((no_lidar, "/sensing/lidar/points"), (bad_layout, "fields"), (no_meta, "metadata.yaml")):
        with pytest.raises(DataError) as err:
            check_replay_bag(bag)
        assert str(bag) in str(err.value) and expect in str(err.value), str(err.value)
    try:  # a half-written mcap: either refused by name, or replayed as far as it can be read, saying so
        check = check_replay_bag(truncated)
    except DataError as exc:
        assert str(truncated) in str(exc)
    else:
        assert 0 < check.clouds < 20 and check.skipped, check.describe()
    good = check_replay_bag(traffic_bag)
    assert good.clouds == 20 and good.camera_frames == 20 and good.labelled_frames == 0 and not good.skipped
    assert {p: _sha256(p) for p in before} == before
    # The CLI refuses before starting anything.
    res = subprocess.run([sys.executable, "-m", "perception.cli", "replay", "--bag", str(no_lidar), "--report",
                          str(tmp_path / "report")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and str(no_lidar) in res.stderr and not (tmp_path / "report").exists()
    res = subprocess.run([sys.executable, "-m", "perception.cli", "replay", "--bag", str(traffic_bag), "--record",
                          str(traffic_bag / "inside")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and "inside or over the replayed bag" in res.stderr
    assert _sha256(traffic_bag) == before[traffic_bag]

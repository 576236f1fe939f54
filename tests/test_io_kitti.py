"""KITTI loader/writer on the real KITTI sample and on hand-built frames, including bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from perception.errors import CalibrationError, DataError
from perception.frame import Box3D, Frame
from perception.io import open_frames
from perception.io.kitti import (
    KittiDataset,
    KittiWriter,
    box_to_label,
    label_to_box,
    parse_label_line,
    read_labels,
    wrap_angle,
)
from perception.rig import KittiCalib


def _copy_frame(kitti_root: Path, dest: Path, fid: str = "000000") -> Path:
    """Copy one real KITTI frame into ``dest`` (a writable layout to break on purpose)."""
    for sub, ext in (("velodyne", ".bin"), ("image_2", ".png"), ("calib", ".txt"), ("label_2", ".txt")):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(kitti_root / "training" / sub / f"{fid}{ext}", dest / sub / f"{fid}{ext}")
    return dest


# ------------------------------------------------------------------------------------------ real KITTI
def test_reads_the_three_real_frames(kitti_root):
    ds = KittiDataset(kitti_root)
    assert ds.ids == ["000000", "000001", "000002"]
    frames = list(ds)
    assert [f.frame_id for f in frames] == ds.ids
    assert [f.stamp_ns for f in frames] == [0, 100_000_000, 200_000_000]
    for f in frames:
        assert f.points.dtype == np.float32 and f.points.shape[1] == 4 and len(f.points) > 100_000
        assert f.image.dtype == np.uint8 and f.image.shape[2] == 3
        assert (f.rig.width, f.rig.height) == (f.image.shape[1], f.image.shape[0])
    assert [b.label for b in frames[1].boxes] == ["Truck", "Car", "Cyclist"]
    assert frames[1].meta["dontcare"].shape == (4, 4)
    assert [b.label for b in frames[2].boxes] == ["Misc", "Car"]


def test_projected_points_land_in_the_image(kitti_root):
    frame = KittiDataset(kitti_root)[0]
    uv, depth, visible = frame.rig.project(frame.points)
    assert visible.sum() > 15_000
    inside = uv[visible]
    assert inside[:, 0].min() >= 0 and inside[:, 0].max() < frame.image.shape[1]
    assert inside[:, 1].min() >= 0 and inside[:, 1].max() < frame.image.shape[0]


def test_pedestrian_holds_a_few_hundred_points(kitti_root):
    frame = KittiDataset(kitti_root)[0]
    (ped,) = frame.boxes
    assert ped.label == "Pedestrian"
    assert 300 <= ped.num_points <= 450  # 377 with the sample's cloud
    # About 8.4 m ahead, 1.9 m to the right, standing on the ground 1.73 m below the LiDAR.
    assert ped.center[0] == pytest.approx(8.7, abs=0.3) and ped.center[1] == pytest.approx(-1.86, abs=0.3)
    assert ped.center[2] - ped.size[2] / 2 == pytest.approx(-1.6, abs=0.2)
    assert ped.bbox2d is not None and ped.bbox2d[0] == pytest.approx(712.40)


def test_label_box_label_round_trip(kitti_root):
    for fid in ("000000", "000001", "000002"):
        calib = KittiCalib.read(kitti_root / "training" / "calib" / f"{fid}.txt")
        for label in read_labels(kitti_root / "training" / "label_2" / f"{fid}.txt"):
            if label.type == "DontCare":
                continue
            back = box_to_label(label_to_box(label, calib), calib)
            np.testing.assert_allclose(back.location, label.location, atol=1e-9)
            np.testing.assert_allclose(back.hwl, label.hwl, atol=1e-12)
            assert wrap_angle(back.rotation_y - label.rotation_y) == pytest.approx(0.0, abs=1e-12)
            np.testing.assert_allclose(back.bbox, label.bbox)
            assert abs(wrap_angle(back.alpha - label.alpha)) < 0.02  # KITTI's alpha is rounded to 2 decimals
            assert (back.occlusion, back.truncation) == (label.occlusion, label.truncation)


def test_open_frames_accepts_training_folder_and_parent(kitti_root):
    assert [f.frame_id for f in open_frames(kitti_root / "training")] == ["000000", "000001", "000002"]


# ------------------------------------------------------------------------------------------ bad input
def test_truncated_bin_names_the_file(kitti_root, tmp_path):
    root = _copy_frame(kitti_root, tmp_path)
    path = root / "velodyne" / "000000.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="multiple of 16") as err:
        KittiDataset(root)[0]
    assert err.value.where == str(path)


def test_label_with_wrong_field_count_names_file_and_line(kitti_root, tmp_path):
    root = _copy_frame(kitti_root, tmp_path, "000001")
    path = root / "label_2" / "000001.txt"
    lines = path.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:-1])  # drop rotation_y of line 3
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="expected 15 fields") as err:
        KittiDataset(root)[0]
    assert err.value.where == f"{path}:3"


def test_label_with_bad_values_or_class(tmp_path):
    with pytest.raises(DataError, match="non-numeric") as err:
        parse_label_line("Car 0.00 0 -1.5 1 2 3 4 1.5 1.6 3.9 1.0 1.7 x 0.1", "f.txt:7")
    assert err.value.where == "f.txt:7"
    with pytest.raises(DataError, match="unknown class 'Spaceship'"):
        parse_label_line("Spaceship 0.00 0 -1.5 1 2 3 4 1.5 1.6 3.9 1.0 1.7 20 0.1", "f.txt:1")
    assert parse_label_line("Car 0 0 -1.5 1 2 3 4 1.5 1.6 3.9 1.0 1.7 20 0.1 0.93", "f.txt:1").type == "Car"


LABELLED = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_labelled"


@pytest.mark.skipif(not (LABELLED / "training" / "label_2").is_dir(), reason=f"{LABELLED} not available")
@pytest.mark.parametrize("field,value,message", [
    (14, "abc", "non-numeric"),  # rotation_y
    (1, "1.5", "truncated must lie in"),
    (2, "1.5", "occluded must be"),
    (2, "7", "occluded must be"),
    (9, "-1.6", "dimensions h w l must be positive"),
    (5, "1e9", "2D box must have"),  # top below the bottom
    (11, "nan", "finite"),
    (0, "Lorry", "unknown class"),
])
def test_malformed_line_of_a_labelled_real_frame_names_file_and_line(tmp_path, field, value, message):
    root = _copy_frame(LABELLED, tmp_path, "000008")  # 6 Cars
    path = root / "label_2" / "000008.txt"
    lines = path.read_text().splitlines()
    parts = lines[3].split()
    parts[field] = value
    lines[3] = " ".join(parts)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message) as err:
        KittiDataset(root)[0]
    assert err.value.where == f"{path}:4"
    assert f"{path}:4" in str(err.value)


def test_real_labels_and_dontcare_lines_pass_the_value_checks(kitti_root):
    frames = list(KittiDataset(kitti_root))
    assert sum(len(f.boxes) for f in frames) == 6 and len(frames[1].meta["dontcare"]) == 4


def test_missing_calib_key_names_the_key(kitti_root, tmp_path):
    root = _copy_frame(kitti_root, tmp_path)
    path = root / "calib" / "000000.txt"
    path.write_text("".join(ln + "\n" for ln in path.read_text().splitlines() if not ln.startswith("Tr_velo_to_cam")))
    with pytest.raises(CalibrationError, match="missing key") as err:
        KittiDataset(root)[0]
    assert err.value.where == f"{path}:Tr_velo_to_cam"


def test_corrupt_png_names_the_file(kitti_root, tmp_path):
    root = _copy_frame(kitti_root, tmp_path)
    path = root / "image_2" / "000000.png"
    path.write_bytes(path.read_bytes()[:2000])  # cut mid-stream
    with pytest.raises(DataError, match="cannot decode image") as err:
        KittiDataset(root)[0]
    assert err.value.where == str(path)


def test_missing_image_and_orphan_files_are_named(kitti_root, tmp_path):
    root = _copy_frame(kitti_root, tmp_path)
    (root / "image_2" / "000000.png").unlink()
    with pytest.raises(DataError, match="has no image") as err:
        KittiDataset(root)[0]
    assert err.value.where == str(root / "image_2" / "000000.png")
    (root / "label_2" / "000007.txt").write_text("")
    with pytest.raises(DataError, match="no point cloud") as err:
        KittiDataset(root)
    assert err.value.where == str(root / "label_2" / "000007.txt")


def test_not_a_kitti_folder(tmp_path):
    with pytest.raises(DataError, match="not a KITTI folder"):
        KittiDataset(tmp_path)


# ------------------------------------------------------------------------------------------ writer
def _hand_frames(rig, n: int = 3) -> list[Frame]:
    rng = np.random.default_rng(7)
    frames = []
    for i in range(n):
        car = Box3D("Car", [11.0, 3.0, -0.8], [4.2, 1.8, 1.5], 0.3 + i, occlusion=1, truncation=0.1, track_id=4)
        local = rng.uniform(-0.45, 0.45, (200, 3)) * car.size  # 200 points well inside the car
        c, s = np.cos(car.yaw), np.sin(car.yaw)
        inside = local @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) + car.center
        background = rng.uniform([-40, -40, 0.2], [40, 40, 2], (3000, 3))  # above every box
        pts = np.concatenate([np.concatenate([background, inside]), rng.uniform(0, 1, (3200, 1))], axis=1)
        boxes = [
            car,
            Box3D("Pedestrian", [6.0, -2.0, -0.9], [0.6, 0.7, 1.75], -3.0, bbox2d=[700, 120, 760, 300]),
            Box3D("Animal", [-15.0, 5.0, -1.3], [1.2, 0.5, 0.8], np.pi - 1e-3),  # behind the camera
        ]
        image = None if i == 1 else rng.integers(0, 255, (rig.height, rig.width, 3), dtype=np.uint8)
        meta = {"dontcare": np.array([[10.0, 20.0, 30.0, 40.0]])} if i == 2 else {}
        frames.append(Frame(points=pts, image=image, rig=rig, stamp_ns=i * 100_000_000, boxes=boxes, meta=meta))
    return frames


def test_writer_round_trip(sim_rig, tmp_path):
    frames = _hand_frames(sim_rig)
    out = tmp_path / "kitti"
    with KittiWriter(out) as writer:
        for f in frames:
            writer.write(f)
    ds = KittiDataset(out)
    assert ds.ids == ["000000", "000001", "000002"]
    assert ds.rig is not None and ds.rig.name == "sim_default"
    for src, got in zip(frames, ds):
        np.testing.assert_array_equal(got.points, src.points)
        assert (got.image is None) == (src.image is None)
        if src.image is not None:
            np.testing.assert_array_equal(got.image, src.image)
        assert [b.label for b in got.boxes] == [b.label for b in src.boxes]
        for a, b in zip(got.boxes, src.boxes):
            np.testing.assert_allclose(a.center, b.center, atol=1e-4)
            np.testing.assert_allclose(a.size, b.size, atol=1e-4)
            assert abs(wrap_angle(a.yaw - b.yaw)) < 1e-4
            assert (a.occlusion, a.truncation) == (b.occlusion, pytest.approx(b.truncation))
        assert got.boxes[0].num_points == 200  # the cluster placed inside the car
        assert got.boxes[0].bbox2d is not None  # projected: the car is in front of the camera
        np.testing.assert_allclose(got.boxes[1].bbox2d, [700, 120, 760, 300])
        assert got.boxes[2].bbox2d is None  # behind the camera: written as -1 -1 -1 -1
    np.testing.assert_allclose(ds[2].meta["dontcare"], [[10, 20, 30, 40]])


def test_writer_refuses_to_overwrite(sim_rig, tmp_path):
    out = tmp_path / "kitti"
    with KittiWriter(out) as w:
        w.write(_hand_frames(sim_rig, 1)[0])
    with pytest.raises(DataError, match="--force") as err:
        KittiWriter(out)
    assert err.value.where == str(out)
    with KittiWriter(out, force=True) as w:
        for f in _hand_frames(sim_rig, 2):
            w.write(f)
    assert len(KittiDataset(out)) == 2
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing to delete"):
        KittiWriter(other, force=True)
    assert (other / "todo.txt").read_text() == "keep me"


def test_failed_write_leaves_no_output(sim_rig, tmp_path):
    out = tmp_path / "kitti"
    with pytest.raises(RuntimeError), KittiWriter(out) as w:
        w.write(_hand_frames(sim_rig, 1)[0])
        raise RuntimeError("simulator crashed")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_real_kitti_survives_writer_round_trip(kitti_root, tmp_path):
    src = list(KittiDataset(kitti_root))
    out = tmp_path / "copy"
    with KittiWriter(out) as w:
        for f in src:
            w.write(f)
    ds = KittiDataset(out)
    assert ds.rig is None  # per-frame calibrations differ: no shared rig.yaml
    for a, b in zip(ds, src):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_allclose(a.rig.lidar_to_camera, b.rig.lidar_to_camera, atol=1e-9)
        np.testing.assert_allclose(a.rig.K, b.rig.K)
        np.testing.assert_allclose(a.meta["dontcare"], b.meta["dontcare"])
        for x, y in zip(a.boxes, b.boxes, strict=True):
            assert x.label == y.label and x.num_points == y.num_points
            np.testing.assert_allclose(x.as_array()[:6], y.as_array()[:6], atol=1e-4)
            assert abs(wrap_angle(x.yaw - y.yaw)) < 1e-4
            np.testing.assert_allclose(x.bbox2d, y.bbox2d)

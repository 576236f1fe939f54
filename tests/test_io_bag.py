"""rosbag2 writer/reader (mcap and sqlite3) with hand-built frames, pairing, and malformed bags."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import DataError
from perception.frame import Box3D, Frame
from perception.io import dataset_format, open_frames
from perception.io.bag import (
    CAMERA_INFO_TOPIC,
    FRAME_INFO_TOPIC,
    GT_TOPIC,
    IMAGE_TOPIC,
    LIDAR_TOPIC,
    TF_STATIC_TOPIC,
    TOPIC_TYPES,
    BagReader,
    BagWriter,
    cloud_to_points,
    points_to_cloud,
    read_bag,
    rig_to_camera_info,
    typestore,
)
from perception.io.kitti import wrap_angle

T0 = 1_700_000_000_000_000_000  # a realistic epoch stamp


def _frames(rig, n: int = 4, drop_image: int | None = 2) -> list[Frame]:
    rng = np.random.default_rng(3)
    frames = []
    for i in range(n):
        boxes = [
            Box3D("Car", [12.0 + i, 2.5, -0.9], [4.1, 1.8, 1.5], np.pi - 0.01 * i, num_points=120 + i, occlusion=1,
                  truncation=0.25, track_id=7, bbox2d=[400.5, 150.25, 520.0, 260.0], velocity=[10.0, 0.0]),
            Box3D("Pedestrian", [7.0, -3.0, -0.8], [0.6, 0.7, 1.8], -1.2, num_points=40),
        ]
        image = None if i == drop_image else rng.integers(0, 255, (rig.height, rig.width, 3), dtype=np.uint8)
        pts = rng.normal(0, 10, (5000 + i, 4)).astype(np.float32)
        frames.append(Frame(points=pts, image=image, rig=rig, stamp_ns=T0 + i * 100_000_000, boxes=boxes,
                            image_stamp_ns=None if i != 1 else T0 + i * 100_000_000 + 20_000_000,
                            frame_id=f"drive7/{i:02d}", meta={"weather": "fog", "drive": np.int64(7),
                                                               "pose": np.eye(4), "night": False}))
    return frames


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip(sim_rig, tmp_path, storage):
    src = _frames(sim_rig)
    path = tmp_path / f"bag_{storage}"
    with BagWriter(path, sim_rig, storage=storage) as writer:
        for f in src:
            writer.write(f)
    assert dataset_format(path) == "bag"
    with BagReader(path) as reader:
        info = reader.info(rates=True)
        got = list(reader.frames())
    assert info.storage == storage
    counts = {k: v.count for k, v in info.topics.items()}
    assert counts == {LIDAR_TOPIC: 4, IMAGE_TOPIC: 3, CAMERA_INFO_TOPIC: 4, TF_STATIC_TOPIC: 1, GT_TOPIC: 4,
                      FRAME_INFO_TOPIC: 4}
    assert info.topics[LIDAR_TOPIC].rate_hz == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(0.3)
    assert len(got) == 4
    for a, b in zip(got, src):
        np.testing.assert_array_equal(a.points, b.points)
        assert a.stamp_ns == b.stamp_ns
        assert (a.image is None) == (b.image is None)
        if b.image is not None:
            np.testing.assert_array_equal(a.image, b.image)
        assert [x.label for x in a.boxes] == ["Car", "Pedestrian"]
        for x, y in zip(a.boxes, b.boxes):
            np.testing.assert_allclose(x.center, y.center, atol=1e-9)
            np.testing.assert_allclose(x.size, y.size, atol=1e-9)
            assert abs(wrap_angle(x.yaw - y.yaw)) < 1e-9
            assert (x.num_points, x.occlusion, x.truncation) == (y.num_points, y.occlusion, y.truncation)
        car, ped = a.boxes
        assert car.track_id == 7 and ped.track_id == -1
        np.testing.assert_allclose(car.bbox2d, [400.5, 150.25, 520.0, 260.0])
        np.testing.assert_allclose(car.velocity, [10.0, 0.0])
        assert ped.bbox2d is None and ped.velocity is None
    assert [f.frame_id for f in got] == [f.frame_id for f in src]
    assert got[0].meta["weather"] == "fog" and got[0].meta["drive"] == 7 and got[0].meta["night"] is False
    assert "pose" not in got[0].meta  # only scalar meta travels
    assert got[1].image_stamp_ns == src[1].image_stamp_ns  # 20 ms late camera still paired
    rig = got[0].rig
    assert rig.name == "sim_default" and rig.lidar_model == sim_rig.lidar_model
    assert (rig.lidar_frame, rig.camera_frame, rig.base_frame) == ("lidar", "camera_optical", "base_link")
    np.testing.assert_allclose(rig.K, sim_rig.K)
    np.testing.assert_allclose(rig.lidar_to_camera, sim_rig.lidar_to_camera, atol=1e-12)
    np.testing.assert_allclose(rig.base_to_lidar, sim_rig.base_to_lidar, atol=1e-12)


def test_images_further_than_50ms_are_not_paired(sim_rig, tmp_path):
    src = _frames(sim_rig, n=3, drop_image=None)
    src[1].image_stamp_ns = src[1].stamp_ns + 60_000_000  # too late for cloud 1, too early for cloud 2
    path = tmp_path / "bag"
    with BagWriter(path, sim_rig) as writer:
        for f in src:
            writer.write(f)
    got = list(open_frames(path))
    assert [f.image is not None for f in got] == [True, False, True]


def _raw_bag(path, rig, topics: dict[str, list]):
    """Write serialized messages directly (to build bags our writer would never produce)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as w:
        for topic, msgs in topics.items():
            conn = w.add_connection(topic, TOPIC_TYPES[topic], typestore=typestore())
            for stamp, msg in msgs:
                w.write(conn, stamp, typestore().serialize_cdr(msg, TOPIC_TYPES[topic]))


def test_bag_without_cloud_topic(sim_rig, tmp_path):
    path = tmp_path / "no_cloud"
    _raw_bag(path, sim_rig, {CAMERA_INFO_TOPIC: [(T0, rig_to_camera_info(sim_rig, T0))]})
    with pytest.raises(DataError, match="no /sensing/lidar/points topic") as err:
        list(read_bag(path))
    assert err.value.where == f"{path}:{LIDAR_TOPIC}"


def test_bag_without_camera_info_names_the_topic(sim_rig, tmp_path):
    path = tmp_path / "no_info"
    _raw_bag(path, sim_rig, {LIDAR_TOPIC: [(T0, points_to_cloud(np.zeros((3, 4)), T0, "lidar"))]})
    with pytest.raises(DataError, match="no /sensing/camera/camera_info topic") as err:
        list(read_bag(path))
    assert err.value.where == f"{path}:{CAMERA_INFO_TOPIC}"


def test_malformed_cloud_names_bag_and_topic(sim_rig, tmp_path):
    cloud = points_to_cloud(np.ones((10, 4)), T0, "lidar")
    cloud.row_step = 16 * 12  # claims more data than it carries
    path = tmp_path / "bad_cloud"
    from perception.io.bag import rig_to_tf

    _raw_bag(path, sim_rig, {LIDAR_TOPIC: [(T0, cloud)], CAMERA_INFO_TOPIC: [(T0, rig_to_camera_info(sim_rig, T0))],
                             TF_STATIC_TOPIC: [(T0, rig_to_tf(sim_rig, T0))]})
    with pytest.raises(DataError, match="does not match") as err:
        list(read_bag(path))
    assert err.value.where.startswith(f"{path}:{LIDAR_TOPIC}")


def test_corrupt_message_bytes(sim_rig, tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = tmp_path / "garbage"
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection(LIDAR_TOPIC, TOPIC_TYPES[LIDAR_TOPIC], typestore=typestore())
        w.write(conn, T0, b"\x00\x01\x00\x00" + b"\xff" * 11)
    with pytest.raises(DataError, match="malformed sensor_msgs/msg/PointCloud2") as err:
        list(read_bag(path))
    assert err.value.where == f"{path}:{LIDAR_TOPIC}"


def test_cloud_with_other_layout_is_converted():
    # x y z float32 at offsets 0 4 8, no intensity, 20-byte points with padding
    pts = np.arange(30, dtype=np.float32).reshape(10, 3)
    rec = np.zeros(10, dtype=np.dtype({"names": ["x", "y", "z"], "formats": ["<f4"] * 3, "offsets": [0, 4, 8],
                                       "itemsize": 20}))
    for i, k in enumerate("xyz"):
        rec[k] = pts[:, i]
    cloud = points_to_cloud(np.zeros((10, 4)), T0, "lidar")
    cloud.fields = cloud.fields[:3]
    cloud.point_step, cloud.row_step, cloud.data = 20, 200, rec.view(np.uint8)
    out = cloud_to_points(cloud, "test")
    np.testing.assert_array_equal(out[:, :3], pts)
    assert (out[:, 3] == 0).all()


def test_writer_refuses_to_overwrite(sim_rig, tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path, sim_rig) as w:
        w.write(_frames(sim_rig, 1)[0])
    with pytest.raises(DataError, match="--force") as err:
        BagWriter(path, sim_rig)
    assert err.value.where == str(path)
    with BagWriter(path, sim_rig, storage="sqlite3", force=True) as w:
        for f in _frames(sim_rig, 2):
            w.write(f)
    with BagReader(path) as r:
        assert r.storage == "sqlite3" and r.info().topics[LIDAR_TOPIC].count == 2


def test_quaternion_helpers_match_scipy():
    from scipy.spatial.transform import Rotation

    from perception.io.bag import matrix_from_quaternion, quaternion_from_matrix

    for r in Rotation.random(200, random_state=1):
        ref = r.as_quat()
        q = quaternion_from_matrix(r.as_matrix())
        assert min(np.abs(q - ref).max(), np.abs(q + ref).max()) < 1e-12
        np.testing.assert_allclose(matrix_from_quaternion(q), r.as_matrix(), atol=1e-12)

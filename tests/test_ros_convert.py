"""Message conversions (ros_nodes.convert): round trips, and malformed messages rejected naming topic + field.

Uses the rclpy message classes (and our built interface package) but starts no DDS participant.
"""

from __future__ import annotations

import array
import copy
import math
import subprocess
import sys

import numpy as np
import pytest

from perception.detector.result import DetectionResult
from perception.errors import CalibrationError, DataError
from perception.frame import Box3D, Detection

pytest.importorskip("trustworthy_perception_msgs.msg", reason="interface package not built (make msgs)")

from sensor_msgs.msg import PointField  # noqa: E402

from ros_nodes import convert  # noqa: E402
from ros_nodes.markers import detections_to_markers, shell_size  # noqa: E402

TOPIC = "/sensing/lidar/points"
ITOPIC = "/sensing/camera/image_raw"


def _points(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32)


def _header(stamp_ns: int = 1_700_000_000_123_456_789, frame: str = "lidar"):
    return convert.make_header(stamp_ns, frame)


def _detection(label: str = "Car", yaw: float = 0.7, with_feature: bool = True) -> Detection:
    cov = np.diag([0.04, 0.09, 0.01, 0.1, 0.05, 0.02, 0.03])
    cov[0, 1] = cov[1, 0] = 0.01
    return Detection(box=Box3D(label, [10.0, -2.0, -0.8], [4.2, 1.8, 1.5], yaw, velocity=np.array([3.0, 0.5])),
                     score=0.9, probability=0.8, covariance=cov, modality_share={"lidar": 0.7, "camera": 0.3},
                     feature=np.arange(8, dtype=np.float32) if with_feature else None, ood_score=1.5,
                     logits=np.array([2.0, -1.0, -3.5]) if with_feature else None)


def test_messages_import_in_a_fresh_interpreter():
    """No sourcing: the venv's python finds the built package (and its libraries) on its own."""
    code = ("from trustworthy_perception_msgs.msg import Detection3DArray, Detection3D, DetectionFeatures, "
            "OodScores, CrowdCount; from tf2_msgs.msg import TFMessage; "
            "from rclpy.serialization import serialize_message, deserialize_message; "
            "m = Detection3DArray(degraded_reasons=['x']); "
            "assert deserialize_message(serialize_message(m), Detection3DArray) == m; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_stamp_round_trip():
    ns = 1_700_000_000_987_654_321
    assert convert.stamp_to_ns(convert.ns_to_stamp(ns)) == ns


def test_pointcloud_round_trip_and_layouts():
    pts = _points()
    msg = convert.points_to_pointcloud(pts, _header())
    assert msg.point_step == 16 and msg.is_dense and len(msg.data) == 16 * len(pts)
    np.testing.assert_array_equal(convert.pointcloud_to_points(msg, TOPIC), pts)
    # padded points (x y z _ intensity _), organised 2-row cloud with row padding
    rows, cols, step = 2, len(pts) // 2, 24
    raw = np.zeros((rows, cols * step + 8), np.uint8)
    body = raw[:, :cols * step].reshape(rows, cols, step)
    for off, col in ((0, 0), (4, 1), (8, 2), (16, 3)):
        body[..., off:off + 4] = pts[:, col].reshape(rows, cols).astype("<f4").view(np.uint8).reshape(rows, cols, 4)
    msg2 = copy.deepcopy(msg)
    msg2.height, msg2.width, msg2.point_step, msg2.row_step = rows, cols, step, cols * step + 8
    msg2.fields = [PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1)
                   for n, o in (("x", 0), ("y", 4), ("z", 8), ("intensity", 16))]
    msg2.data = array.array("B", raw.tobytes())
    np.testing.assert_array_equal(convert.pointcloud_to_points(msg2, TOPIC), pts)
    # no intensity field -> zeros
    msg3 = copy.deepcopy(msg)
    msg3.fields = msg3.fields[:3]
    got = convert.pointcloud_to_points(msg3, TOPIC)
    np.testing.assert_array_equal(got[:, :3], pts[:, :3])
    assert not got[:, 3].any()


def test_empty_cloud_is_valid():
    msg = convert.points_to_pointcloud(np.zeros((0, 4), np.float32), _header())
    assert convert.pointcloud_to_points(msg, TOPIC).shape == (0, 4)


def test_image_round_trip_bgr_and_padding():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, size=(6, 7, 3), dtype=np.uint8)
    msg = convert.array_to_image(img, _header(frame="camera"))
    np.testing.assert_array_equal(convert.image_to_array(msg, ITOPIC), img)
    bgr = copy.deepcopy(msg)
    bgr.encoding = "bgr8"
    bgr.step = 7 * 3 + 5
    padded = np.zeros((6, bgr.step), np.uint8)
    padded[:, :21] = img[..., ::-1].reshape(6, 21)
    bgr.data = array.array("B", padded.tobytes())
    np.testing.assert_array_equal(convert.image_to_array(bgr, ITOPIC), img)


def test_camera_info_round_trip(sim_rig):
    info = convert.rig_to_camera_info(sim_rig, _header(frame=sim_rig.camera_frame))
    rig = convert.camera_info_to_rig(info, sim_rig, "/sensing/camera/camera_info")
    np.testing.assert_allclose(rig.K, sim_rig.K)
    assert (rig.width, rig.height) == (sim_rig.width, sim_rig.height)
    np.testing.assert_allclose(rig.lidar_to_camera, sim_rig.lidar_to_camera)


def test_detections_round_trip():
    dets = [_detection("Car", 0.7), _detection("Pedestrian", -2.5), _detection("Tram", 3.0)]
    result = DetectionResult(detections=dets, degraded=["camera_missing"], dropped_points=7, model_id="m@torch")
    msg = convert.result_to_msg(result, _header(), extra_degraded=["camera_late", "camera_missing"])
    assert msg.degraded and list(msg.degraded_reasons) == ["camera_missing", "camera_late"]
    assert msg.dropped_points == 7 and msg.model_id == "m@torch"
    assert [d.class_id for d in msg.detections] == [0, 1, convert.UNKNOWN_CLASS_ID]
    back = convert.msg_to_detections(msg)
    for a, b in zip(dets, back):
        assert a.label == b.label
        np.testing.assert_allclose(b.box.as_array()[:6], a.box.as_array()[:6])
        assert math.isclose(math.remainder(b.box.yaw - a.box.yaw, 2 * math.pi), 0.0, abs_tol=1e-9)
        np.testing.assert_allclose(b.covariance, a.covariance)
        np.testing.assert_allclose(b.box.velocity, a.box.velocity)
        assert b.probability == pytest.approx(a.probability) and b.score == pytest.approx(a.score)
        assert b.modality_share["lidar"] == 1.0 and b.ood_score == pytest.approx(1.5)  # camera_missing: LiDAR-only


def test_share_source_attention_lidar_only_and_unknown():
    from trustworthy_perception_msgs.msg import Detection3D

    det = _detection()
    msg = convert.result_to_msg(DetectionResult([det]), _header())
    d = msg.detections[0]
    assert d.share_source == Detection3D.SHARE_ATTENTION and d.camera_share == pytest.approx(0.3)
    # the network ran LiDAR-only (degraded): 100 % LiDAR whatever the attention said
    msg = convert.result_to_msg(DetectionResult([det], degraded=["camera_missing"]), _header())
    d = msg.detections[0]
    assert d.share_source == Detection3D.SHARE_LIDAR_ONLY and (d.lidar_share, d.camera_share) == (1.0, 0.0)
    assert convert.msg_to_detections(msg)[0].modality_share == {"lidar": 1.0, "camera": 0.0}
    bare = copy.copy(det)
    bare.modality_share = {}
    d = convert.result_to_msg(DetectionResult([bare]), _header()).detections[0]
    assert d.share_source == Detection3D.SHARE_UNKNOWN and math.isnan(d.lidar_share) and math.isnan(d.camera_share)


def test_features_round_trip():
    dets = [_detection(), _detection("Cyclist")]
    for k, d in enumerate(dets):
        d.geometry = np.arange(11, dtype=np.float32) + k
    result = DetectionResult(detections=dets, frame_embedding=np.ones(5, np.float32), model_id="m@onnxruntime-int8",
                             degraded=["camera_missing"])
    msg = convert.features_to_msg(result, _header())
    feats, emb, logits, geometry = convert.features_from_msg(msg)
    assert msg.engine == "onnxruntime-int8" and msg.geometry_dim == 11
    assert list(msg.degraded) == ["camera_missing"] and not result.camera_used
    np.testing.assert_array_equal(geometry, np.stack([d.geometry for d in dets]))
    assert msg.dim == 8 and feats.shape == (2, 8) and list(msg.labels) == ["Car", "Cyclist"]
    np.testing.assert_array_equal(feats[1], np.arange(8))
    np.testing.assert_array_equal(emb, np.ones(5))
    np.testing.assert_array_equal(logits, np.stack([d.logits for d in dets]).astype(np.float32))
    empty = convert.features_to_msg(DetectionResult(detections=[_detection(with_feature=False)]), _header())
    assert empty.dim == 0 and len(empty.features) == 0 and empty.num_classes == 0
    assert convert.features_from_msg(empty)[2] is None and convert.features_from_msg(empty)[3] is None
    short = copy.deepcopy(msg)
    short.geometry = short.geometry[:-1]
    with pytest.raises(DataError, match="geometry_dim"):
        convert.features_from_msg(short, "/perception/features")
    bad = copy.deepcopy(msg)
    bad.logits = bad.logits[:-1]
    with pytest.raises(DataError, match="num_classes"):
        convert.features_from_msg(bad, "/perception/features")


def test_markers_box_shell_and_label():
    det = _detection()
    markers = detections_to_markers([det, _detection("Pedestrian")], _header(), min_probability=0.5).markers
    assert markers[0].action == markers[0].DELETEALL
    assert [m.ns for m in markers[1:4]] == ["boxes", "uncertainty", "labels"]
    box, shell, label = markers[1:4]
    assert shell.scale.x > box.scale.x and shell.scale.y > box.scale.y and shell.scale.z > box.scale.z
    assert label.text == "Car 0.80 L70% C30%"
    lidar_only = detections_to_markers([det], _header(), camera_used=False).markers[3]
    assert lidar_only.ns == "labels" and lidar_only.text == "Car 0.80 LiDAR-only"
    assert box.color.a == pytest.approx(0.15 + 0.7 * 0.8)
    np.testing.assert_allclose(shell_size(det), [shell.scale.x, shell.scale.y, shell.scale.z], rtol=1e-6)
    assert not detections_to_markers([det], _header(), min_probability=0.9).markers[1:]


# ---------------------------------------------------------------------- malformed messages
def _cloud_cases():
    good = convert.points_to_pointcloud(_points(), _header())

    def mutate(fn):
        m = copy.deepcopy(good)
        fn(m)
        return m

    def field(name, **kw):
        def fn(m):
            for f in m.fields:
                if f.name == name:
                    for k, v in kw.items():
                        setattr(f, k, v)
        return fn

    nan = _points()
    nan[3, 1] = np.nan
    dense_nan = convert.points_to_pointcloud(nan, _header())
    dense_nan.is_dense = True
    return [
        ("missing_z", mutate(lambda m: setattr(m, "fields", m.fields[:2])), "fields"),
        ("duplicate_field", mutate(lambda m: m.fields.append(m.fields[0])), "fields"),
        ("x_float64", mutate(field("x", datatype=PointField.FLOAT64)), "fields[x].datatype"),
        ("intensity_uint8", mutate(field("intensity", datatype=PointField.UINT8)), "fields[intensity].datatype"),
        ("y_count_3", mutate(field("y", count=3)), "fields[y].count"),
        ("z_offset_past_step", mutate(field("z", offset=14)), "fields[z].offset"),
        ("overlapping_fields", mutate(field("y", offset=2)), "fields"),
        ("big_endian", mutate(lambda m: setattr(m, "is_bigendian", True)), "is_bigendian"),
        ("zero_point_step", mutate(lambda m: setattr(m, "point_step", 0)), "point_step"),
        ("short_row_step", mutate(lambda m: setattr(m, "row_step", 10)), "row_step"),
        ("truncated_data", mutate(lambda m: setattr(m, "data", m.data[:-5])), "data"),
        ("width_too_big", mutate(lambda m: setattr(m, "width", m.width + 1)), "row_step"),
        ("nan_in_dense_cloud", dense_nan, "is_dense"),
    ]


@pytest.mark.parametrize("case", _cloud_cases(), ids=lambda c: c[0])
def test_malformed_cloud_rejected_naming_topic_and_field(case):
    _, msg, field = case
    with pytest.raises(DataError) as err:
        convert.pointcloud_to_points(msg, TOPIC)
    assert err.value.where == f"{TOPIC}:{field}"


def _image_cases():
    good = convert.array_to_image(np.zeros((4, 5, 3), np.uint8), _header())

    def mutate(**kw):
        m = copy.deepcopy(good)
        for k, v in kw.items():
            setattr(m, k, v)
        return m

    return [
        ("encoding_16uc1", mutate(encoding="16UC1"), "encoding"),
        ("encoding_yuv", mutate(encoding="yuv422"), "encoding"),
        ("zero_height", mutate(height=0), "height"),
        ("zero_width", mutate(width=0), "width"),
        ("step_too_small", mutate(step=10), "step"),
        ("data_too_long", mutate(data=array.array("B", bytes(4 * 15 + 3))), "data"),
        ("data_empty", mutate(data=array.array("B")), "data"),
    ]


@pytest.mark.parametrize("case", _image_cases(), ids=lambda c: c[0])
def test_malformed_image_rejected_naming_topic_and_field(case):
    _, msg, field = case
    with pytest.raises(DataError) as err:
        convert.image_to_array(msg, ITOPIC)
    assert err.value.where == f"{ITOPIC}:{field}"


def test_malformed_camera_info_rejected(sim_rig):
    topic = "/sensing/camera/camera_info"
    good = convert.rig_to_camera_info(sim_rig, _header())
    cases = []
    m = copy.deepcopy(good)
    m.k[0] = float("nan")
    cases.append((m, DataError, f"{topic}:k"))
    m = copy.deepcopy(good)
    m.distortion_model = "equidistant"
    cases.append((m, DataError, f"{topic}:distortion_model"))
    m = copy.deepcopy(good)
    m.d = [0.1, 0.0, 0.0]
    cases.append((m, DataError, f"{topic}:d"))
    m = copy.deepcopy(good)
    m.width = 0
    cases.append((m, DataError, f"{topic}:width"))
    m = copy.deepcopy(good)
    m.k[0] = -5.0
    cases.append((m, CalibrationError, topic))
    for msg, exc_type, where in cases:
        with pytest.raises(exc_type) as err:
            convert.camera_info_to_rig(msg, sim_rig, topic)
        assert err.value.where.startswith(where)

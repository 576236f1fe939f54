"""The XAI renderer (perception.trust.explain) on real KITTI frames through the shipped detector, and the
bad inputs: no camera, no detections, no points, detections without attention, zero attention."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pytest

from perception.detector.api import FusionDetector
from perception.detector.result import CAMERA_MISSING, DetectionResult
from perception.frame import Box3D, Detection, Frame
from perception.io import KittiDataset
from perception.trust.explain import (
    CLASS_COLORS,
    bev_heat,
    image_heat,
    label_text,
    render_bev,
    render_image,
    shown_detections,
)

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "fusion_default"


@pytest.fixture(scope="module")
def detector() -> FusionDetector:
    return FusionDetector.load(MODEL, backend="torch", num_threads=1)


@pytest.fixture(scope="module")
def kitti(kitti_root, detector):
    frame = KittiDataset(kitti_root)[1]  # Car, Cyclist, Truck
    return frame, detector(frame)


def _colour_pixels(img: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((img.reshape(-1, 3) == colour).all(axis=1).sum())


def test_only_confident_detections_each_with_its_own_visible_heat(kitti):
    frame, result = kitti
    shown = shown_detections(result, 0.3, 5)
    assert shown and len(shown) <= 5 and all(d.probability >= 0.3 for d in shown)
    assert [d.probability for d in shown] == sorted((d.probability for d in shown), reverse=True)
    img = render_image(frame, result)
    assert img.shape == frame.image.shape and img.dtype == np.uint8
    changed = np.abs(img.astype(int) - frame.image.astype(int)).sum(-1) > 30
    assert 0.01 < changed.mean() < 0.8  # heat visible, not a wash over the whole picture
    # the heat sits where the most probable detection's attention peaks (feature cell -> pixels)
    peak = np.unravel_index(np.argmax(image_heat(shown[0], (12, 40))), (12, 40))
    v, u = int((peak[0] + 0.5) * frame.image.shape[0] / 12), int((peak[1] + 0.5) * frame.image.shape[1] / 40)
    assert changed[max(0, v - 16):v + 16, max(0, u - 16):u + 16].any()
    assert _colour_pixels(img, CLASS_COLORS[shown[0].label]) > 50  # box and label in the class colour
    # a detection below the threshold is not drawn: with a threshold above every p nothing is boxed
    none = render_image(frame, result, min_probability=1.01)
    assert all(_colour_pixels(none, c) < 20 for c in CLASS_COLORS.values())


def test_bev_shows_points_under_per_detection_heat(kitti):
    frame, result = kitti
    bev = render_bev(frame, result)
    assert bev.shape == (108 * 4, 124 * 4, 3)
    grey = (bev[..., 0] == bev[..., 1]) & (bev[..., 1] == bev[..., 2]) & (bev[..., 0] > 30)
    assert grey.mean() > 0.01  # the point cloud
    heat = bev_heat(shown_detections(result, 0.3, 5)[0])
    assert heat is not None and heat.max() > 0
    # points alone (no detections drawn) differ from the picture with heat and boxes
    plain = render_bev(frame, result, min_probability=1.01)
    assert (np.abs(plain.astype(int) - bev.astype(int)).sum(-1) > 30).sum() > 200


def test_label_says_class_probability_sigma_and_share(kitti):
    _, result = kitti
    det = shown_detections(result, 0.3, 5)[0]
    text = label_text(det)
    assert text.startswith(f"{det.label} p{det.probability:.2f} σ") and " L" in text and "/C" in text
    assert label_text(det, camera_used=False).endswith("L100/C0")


def test_no_camera_gives_a_lidar_only_picture_with_boxes(kitti, detector):
    frame, _ = kitti
    blind = copy.copy(frame)
    blind.image = None
    result = detector(blind)
    assert CAMERA_MISSING in result.degraded
    assert all(d.modality_share == {"lidar": 1.0, "camera": 0.0} for d in result.detections)
    img = render_image(blind, result)
    assert img.shape == (frame.rig.height, frame.rig.width, 3)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 5  # text and boxes, not a blank canvas
    det = shown_detections(result, 0.3, 5)[0]
    assert _colour_pixels(img, CLASS_COLORS[det.label]) > 50
    assert render_bev(blind, result).shape == (432, 496, 3)


def test_empty_frame_zero_and_missing_attention_are_pictures_not_errors(kitti, detector):
    frame, result = kitti
    empty = Frame(np.zeros((0, 4), np.float32), frame.image, frame.rig, frame_id="empty")
    res = detector(empty)
    assert res.detections == []
    for img in (render_image(empty, res), render_bev(empty, res), render_bev(None, res)):
        assert img.dtype == np.uint8 and len(np.unique(img.reshape(-1, 3), axis=0)) > 5  # says "no detections"
    # detections without attention (degraded input, or attention dropped) and with all-zero attention
    det = shown_detections(result, 0.3, 5)[0]
    bare = Detection(Box3D(det.label, det.box.center, det.box.size, det.box.yaw), det.score, det.probability,
                     det.covariance)
    zero = copy.copy(det)
    zero.attention = {k: np.zeros_like(v) for k, v in det.attention.items()}
    for d in (bare, zero):
        r = DetectionResult([d], degraded=[CAMERA_MISSING] if d is bare else [])
        img = render_image(frame, r)
        assert _colour_pixels(img, CLASS_COLORS[det.label]) > 50
        assert np.array_equal(img[200:300, 300:400], frame.image[200:300, 300:400]) or d is bare
        assert render_bev(frame, r).shape == (432, 496, 3)


def test_image_and_bev_render_fast(kitti):
    frame, result = kitti
    render_image(frame, result), render_bev(frame, result)  # warm caches (fonts, palettes)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        render_image(frame, result)
        render_bev(frame, result)
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.2  # ~25 ms on one core of this shared machine; generous against contention

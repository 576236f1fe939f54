"""``perception.eval.evaluate`` on real KITTI frames with the shipped detector: detections carry their projected
2D box, the metrics document holds devkit and exact AP, object counts, AP by range, FP per frame, and the
report draws every real frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perception.detector.api import FusionDetector
from perception.detector.checkpoint import CONFIG_FILE
from perception.detector.config import DetectorConfig
from perception.eval.ap import gt_counts
from perception.eval.evaluate import RANGE_BINS, attach_image_boxes, evaluate, run_detector
from perception.frame import Box3D, Detection
from perception.io import KittiDataset
from perception.io.kitti import project_box_2d

MODEL = Path(__file__).resolve().parents[1] / "models" / "fusion_default"


@pytest.fixture(scope="module")
def detector() -> FusionDetector:
    return FusionDetector.load(MODEL)


def _detection(box: Box3D) -> Detection:
    return Detection(box=box, score=0.9, probability=0.9, covariance=np.eye(7))


def test_detections_get_their_image_box_or_height_zero(kitti_root):
    frame = KittiDataset(kitti_root)[0]
    ahead = _detection(Box3D("Car", [10.0, 0.0, -1.0], [4.0, 1.8, 1.5], 0.0))
    behind = _detection(Box3D("Car", [-10.0, 0.0, -1.0], [4.0, 1.8, 1.5], 0.0))
    attach_image_boxes([ahead, behind], frame.rig)
    np.testing.assert_allclose(ahead.box.bbox2d, project_box_2d(frame.rig, ahead.box.as_array()))
    assert ahead.box.bbox2d[3] - ahead.box.bbox2d[1] > 25  # a car 10 m ahead is tall in the image
    np.testing.assert_array_equal(behind.box.bbox2d, [-1, -1, -1, -1])  # KITTI's "no box": height 0
    nowhere = _detection(Box3D("Car", [10.0, 0.0, -1.0], [4.0, 1.8, 1.5], 0.0))
    attach_image_boxes([nowhere], None)
    assert nowhere.box.bbox2d is None


def test_run_detector_records_carry_image_boxes(kitti_root, detector):
    records = run_detector(detector, iter(KittiDataset(kitti_root)), total=3)
    dets = [d for r in records for d in r.detections]
    assert dets and all(d.box.bbox2d is not None and d.box.bbox2d.shape == (4,) for d in dets)


def test_evaluate_real_frames_reports_everything(kitti_root, detector, tmp_path):
    cfg = DetectorConfig.from_yaml(MODEL / CONFIG_FILE)
    m = evaluate(detector, str(kitti_root), cfg, lidar_only=False, report_dir=tmp_path / "report",
                 stage_latency=False)
    classes = list(cfg.model.classes)
    frames = list(KittiDataset(kitti_root))
    expected = {c: sum(gt_counts(b, "moderate") for f in frames for b in f.boxes if b.label == c) for c in classes}
    assert m["num_gt"] == expected and m["difficulty"] == "moderate"
    for key in ("ap3d", "ap3d_r40", "apbev", "apbev_r40"):
        assert set(m[key]) == set(classes)
        assert all(v is None or 0.0 <= v <= 100.0 for v in m[key].values())
    assert len(m["ap3d_by_range"]) == len(RANGE_BINS)
    for c in classes:  # every counted object falls in exactly one range bin
        assert sum(b[c]["num_gt"] for b in m["ap3d_by_range"].values()) == expected[c]
    assert m["fp_per_frame_p50"]["all"] == pytest.approx(sum(m["fp_per_frame_p50"][c] for c in classes), abs=1e-2)
    for key in ("dece_before", "dece_after", "coverage_1sigma", "coverage_2sigma"):
        assert key in m
    report = tmp_path / "report"
    pngs = sorted(p.name for p in report.glob("frame_*.png"))
    assert pngs == [f"frame_{f.frame_id}.png" for f in frames]  # every real frame drawn
    html = (report / "index.html").read_text()
    assert "3D AP devkit" in html and all(name in html for name in pngs)
    json.dumps(m)  # the --json document


def test_unlabelled_real_frames_are_not_scored_as_frames_without_objects(detector, tmp_path):
    """A real drive without labels has no ground truth: no AP, D-ECE or false positives (every detection would
    count as one), only detections and latency."""
    from perception.commands.eval import format_metrics
    from perception.eval.evaluate import NO_GROUND_TRUTH

    raw = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_raw_0926_traffic"
    if not raw.is_dir():
        pytest.skip(f"real unlabelled drive not available at {raw}")
    cfg = DetectorConfig.from_yaml(MODEL / CONFIG_FILE)
    m = evaluate(detector, str(raw), cfg, limit=2, lidar_only=True, report_dir=tmp_path / "report", pictures=1)
    assert m["frames"] == 2 and m["labelled_frames"] == 0 and m["ground_truth"] == NO_GROUND_TRUTH
    for key in ("ap3d", "dece_before", "fp_per_frame_p50", "ap3d_lidar_only", "lidar_only_car_retention"):
        assert key not in m, key
    assert m["latency_ms"]["total"]["p50"] > 0
    assert "ground truth     none" in format_metrics(m)
    assert (tmp_path / "report" / "index.html").is_file()

"""Deletion / insertion faithfulness test on a real KITTI frame with the shipped model, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from perception.detector.api import engine_inputs
from perception.detector.checkpoint import load_model, torch_inputs
from perception.detector.inputs import prepare_frame
from perception.frame import Frame
from perception.io import KittiDataset
from perception.trust.faithfulness import (
    AGGREGATIONS,
    FaithfulnessTest,
    Probe,
    bev_relevance,
    match_score,
    summarise,
)

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "fusion_default"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model(MODEL)


@pytest.fixture(scope="module")
def curves(model, kitti_root):
    net, cfg, cal = model
    test = FaithfulnessTest(net, cfg.model, cal, min_probability=0.6, steps=(0.1, 0.4))
    return test.frame(KittiDataset(kitti_root)[0])


def test_curves_start_at_the_unperturbed_score_and_follow_each_relevance(curves):
    assert curves, "the shipped model finds confident objects on KITTI 000000"
    for c in curves:
        assert c.probability >= 0.6
        lidar = c.curves["deletion"]["lidar"]
        assert set(lidar) == {*(f"attention_{a}" for a in AGGREGATIONS), "random", "gradient"}
        for kind in ("deletion", "insertion"):
            for methods in c.curves[kind].values():
                for values in methods.values():
                    assert len(values) == 3 and all(np.isfinite(values)) and min(values) >= 0.0
        assert all(v[0] == 1.0 for v in lidar.values())
        # from empty evidence (no points left in the windows) the detection is gone or nearly so
        assert c.curves["insertion"]["lidar"]["random"][0] < 0.5


def test_summary_has_the_documented_fields(curves):
    s = summarise(curves, frames=1, steps=(0.1, 0.4))
    assert s["steps"] == [0.1, 0.4]
    assert s["frames"] == 1 and s["detections"] == len(curves)
    for kind in ("deletion", "insertion"):
        for m in ("lidar", "camera"):
            assert {"attention_auc", "random_auc", "gradient_auc", "ratio_to_random"} <= set(s[kind][m])
        assert set(s["aggregations"][kind]["lidar"]) == set(AGGREGATIONS)
    assert s["deletion"]["lidar"]["attention_auc"] is not None


def test_match_score_and_relevance_on_the_unperturbed_frame(model, kitti_root):
    net, cfg, cal = model
    frame = KittiDataset(kitti_root)[0]
    feed = torch_inputs(engine_inputs(prepare_frame(frame, cfg.model)))
    probe = Probe(net, cfg.model, cal)
    out = probe.forward(feed)
    q = int(torch.sigmoid(out.logits[-1, 0]).max(-1).values.argmax())
    ci = int(out.logits[-1, 0, q].argmax())
    b = out.boxes[-1, 0, q].numpy()
    box = np.r_[b[0:3], np.exp(b[3:6]), np.arctan2(b[6], b[7])]
    assert match_score(out, box, ci) == pytest.approx(float(torch.sigmoid(out.logits[-1, 0, q, ci])), rel=1e-6)
    n = cfg.model.bev_shape[0] * cfg.model.bev_shape[1]
    last, layers = (bev_relevance(out, q, a, probe._self_attn[-1], n) for a in ("last", "layers"))
    rollout = bev_relevance(out, q, "rollout", probe._self_attn[-1], n)
    cam = float(out.camera_share[0, q])
    assert last.sum() == pytest.approx(1.0 - cam, abs=1e-4)  # the fusion layer's BEV mass
    assert layers.sum() == pytest.approx(2.0 - cam, abs=1e-4) and rollout.sum() == pytest.approx(2.0 - cam, abs=1e-3)


def test_empty_frame_has_no_curves(model, kitti_root):
    net, cfg, cal = model
    frame = KittiDataset(kitti_root)[0]
    assert FaithfulnessTest(net, cfg.model, cal).frame(Frame(np.zeros((0, 4)), frame.image, frame.rig)) == []


def test_cli_writes_json_and_report_and_refuses_to_overwrite(kitti_root, tmp_path):
    out = tmp_path / "f.json"
    report = tmp_path / "report"
    cmd = [sys.executable, "-m", "perception.cli", "explain", "--model", str(MODEL), "--data", str(kitti_root),
           "--limit", "1", "--min-probability", "0.8", "--json", str(out), "--report", str(report)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr
    s = json.loads(out.read_text())
    assert s["frames"] == 1 and s["detections"] >= 1
    assert {"attention_auc", "random_auc", "gradient_auc", "ratio_to_random"} <= set(s["deletion"]["lidar"])
    assert {"lidar", "camera"} <= set(s["insertion"])
    html = (report / "index.html").read_text()
    assert "curves.png" in html and (report / "curves.png").stat().st_size > 10_000
    assert list(report.glob("xai_*_image.png")) and list(report.glob("xai_*_bev.png"))
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert again.returncode == 2 and "--force" in again.stderr

"""The robustness suite end to end: the shipped model on its default engine (ONNX Runtime), real OOD statistics,
simulated and real KITTI frames; the CLI's JSON, report and errors; the flagged-input calibration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perception.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = REPO_ROOT / "models" / "fusion_default"


@pytest.fixture(scope="module")
def shipped():
    from perception.engines.registry import resolve_backend
    from perception.ood.collect import load_detector
    from perception.ood.monitor import OodMonitor

    backend = resolve_backend(MODEL, "auto")
    return load_detector(MODEL, 1, backend), OodMonitor.load(MODEL, backend)


@pytest.fixture(scope="module")
def sim_run(shipped, sim_rig):
    from perception.robustness.suite import run_suite
    from perception.sim import simulate_drive

    detector, monitor = shipped
    frames = list(simulate_drive(sim_rig, n_frames=3, seed=5))
    return run_suite(detector, monitor, frames, 3, ["missing_camera", "temporal_misalignment", "point_drop"], [1, 3],
                     seed=0, frames_per_sequence=3)


def test_suite_runs_every_cell_and_skips_frames_without_history(sim_run):
    assert sim_run.frames == 3
    assert len(sim_run.records[("clean", 0)]) == 3
    assert len(sim_run.records[("temporal_misalignment", 1)]) == 2  # the drive's first frame has no earlier one
    assert sim_run.not_applicable[("temporal_misalignment", 3)] == 3
    no_cam = sim_run.records[("missing_camera", 3)]
    assert all("camera_missing" in r.record.degraded and r.health for r in no_cam)
    assert all(r.health for r in sim_run.records[("temporal_misalignment", 1)])  # 0.1 s camera-LiDAR skew
    assert not any(r.health for r in sim_run.records[("clean", 0)])


def test_summary_has_the_documented_shape_and_consistent_ra(sim_run):
    from perception.robustness.suite import summarize
    from perception.trust.calibration import Calibration

    shifted = Calibration(temperature={"Car": 2.0, "Pedestrian": 2.0, "Cyclist": 2.0},
                          variance_scale=[2.0] * 7)
    doc = summarize(sim_run, ["Car", "Pedestrian", "Cyclist"], "moderate", shifted)
    assert set(doc["clean"]["ap3d"]) == {"Car", "Pedestrian", "Cyclist"}
    cell = doc["corruptions"]["point_drop"]["3"]
    for key in ("ap3d", "ra", "dece", "coverage_1sigma", "flagged", "dece_fixed", "coverage_1sigma_fixed"):
        assert key in cell
    assert doc["corruptions"]["temporal_misalignment"]["3"]["frames"] == 0
    assert doc["corruptions"]["temporal_misalignment"]["3"]["ra"] is None
    clean = [v for v in doc["clean"]["ap3d"].values() if v]
    if clean:  # RA = mean AP over classes with a clean AP, corrupted / clean
        classes = [c for c, v in doc["clean"]["ap3d"].items() if v]
        num = np.mean([cell["ap3d"][c] or 0.0 for c in classes if cell["ap3d"][c] is not None])
        assert cell["ra"] == pytest.approx(num / np.mean(clean), abs=1e-3)
        ras = [c["ra"] for cells in doc["corruptions"].values() for k, c in cells.items()
               if k != "mean_ra" and c["ra"] is not None]
        assert doc["mRA"] == pytest.approx(np.mean(ras), abs=1e-3)
    # Flagged frames took the wider σ: coverage can only grow.
    if cell["coverage_1sigma"] is not None and cell["flagged"] == 1.0:
        assert cell["coverage_1sigma_fixed"] >= cell["coverage_1sigma"]


def test_flagged_input_calibration_is_fitted_from_flagged_runs_and_applied_only_to_them(sim_run):
    from perception.robustness.suite import fit_flagged_calibration
    from perception.trust.shift_calibration import calibrate_for_flags

    cal = fit_flagged_calibration(sim_run, "test frames")
    assert cal.num_detections > 0 and cal.fitted_on == "test frames"
    dets = sim_run.records[("missing_camera", 3)][0].record.detections
    assert calibrate_for_flags(dets, False, cal) is dets
    fixed = calibrate_for_flags(dets, True, cal)
    for d, f in zip(dets, fixed):
        assert f.score == d.score and f.box is d.box
        assert np.allclose(np.diag(f.covariance), np.diag(d.covariance) * np.asarray(cal.variance_scale))
        logit = np.log(d.score / (1 - d.score))
        assert f.probability == pytest.approx(float(cal.probability(logit, d.label)), abs=1e-6)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perception.cli", "robustness", "--model", str(MODEL), *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)


def test_cli_on_real_kitti_frames_writes_json_and_report(kitti_root, tmp_path):
    out = tmp_path / "rob.json"
    res = _cli("--data", str(kitti_root), "--limit", "2", "--corruptions", "fog", "missing_camera",
               "--severities", "1", "3", "--json", str(out), "--report", str(tmp_path / "report"))
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["frames"] == 2 and doc["backend"] == "onnxruntime-int8"
    assert set(doc["corruptions"]) == {"fog", "missing_camera"}
    assert set(doc["corruptions"]["fog"]) == {"1", "3", "mean_ra"}
    assert doc["corruptions"]["missing_camera"]["3"]["flagged"] == 1.0
    assert doc["corruptions"]["missing_camera"]["3"]["lidar_only"] == 1.0
    assert "mRA" in doc and "ap3d" in doc["clean"]
    names = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"index.html", "ra.png", "dece.png", "flagged.png", "corruption_fog.png",
            "corruption_missing_camera.png"} <= names
    assert "mRA" in res.stdout


def test_cli_names_the_valid_corruptions_and_severities(kitti_root):
    res = _cli("--data", str(kitti_root), "--corruptions", "hail")
    assert res.returncode == 2 and "valid: beam_reduction" in res.stderr and "temporal_misalignment" in res.stderr
    res = _cli("--data", str(kitti_root), "--severities", "5")
    assert res.returncode == 2 and "valid: 1, 2, 3" in res.stderr


def test_cli_names_match_the_registry():
    from perception.commands.robustness import CORRUPTION_NAMES
    from perception.robustness import CORRUPTIONS

    assert CORRUPTION_NAMES == tuple(CORRUPTIONS)


def test_fitting_on_the_test_split_is_refused(tmp_path):
    import argparse

    from perception.commands.robustness import run

    args = argparse.Namespace(corruptions=None, severities=[1], limit=None, data="sim:test", model=str(MODEL),
                              fit_shift_calibration=tmp_path / "c.json", force=False)
    with pytest.raises(ConfigError, match="calibration split"):
        run(args)


def test_lidar_part_scoring_uses_the_lidar_models_and_thresholds(shipped, kitti_root):
    from perception.io import KittiDataset

    detector, monitor = shipped
    result = detector(KittiDataset(kitti_root)[1])
    full, lidar = monitor.score_result(result), monitor.score_result(result, lidar_part=True)
    assert not full.lidar_only and lidar.lidar_only
    assert lidar.thresholds["frame"]["frame"] == monitor.stats.thresholds["frame_lidar"]["frame"]
    assert lidar.frame["frame"] != full.frame["frame"]
    assert np.array_equal(lidar.detection["mahalanobis"], full.detection["mahalanobis"])

"""Evaluate a detector on a data source: KITTI AP (devkit and exact R40), by range, detection ECE, interval
coverage, false positives per frame, latency."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from perception.detector.api import FusionDetector
from perception.detector.config import DetectorConfig
from perception.detector.result import DetectionResult
from perception.errors import DataError
from perception.eval.ap import ClassAP, evaluate_ap
from perception.eval.calibration_metrics import box_residuals, detection_ece, interval_coverage, match_correct
from perception.frame import Box3D, Detection, Frame, boxes_to_array
from perception.io.kitti import project_box_2d
from perception.rig import Rig
from perception.trust.calibration import Calibration, fit_temperature, fit_variance_scale

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
DEFAULT_RIG = REPO / "calibration" / "sim_default.yaml"
SIM_SPLITS = ("train", "val", "calib", "test")
#: Range bins (metres from the sensor, horizontal) of the AP-by-range table.
RANGE_BINS: tuple[tuple[float, float], ...] = ((0.0, 20.0), (20.0, 40.0), (40.0, math.inf))
#: Calibrated probability from which an unmatched detection counts in ``fp_per_frame``.
FP_PROBABILITY = 0.5
#: Frames of a real (non-simulated) source drawn in the report: all of them up to this many.
MAX_REAL_PICTURES = 100
#: KITTI's "no 2D box" (``-1 -1 -1 -1``): a detection outside the image has height 0.
NO_IMAGE_BOX = np.full(4, -1.0)


@dataclass
class FrameRecord:
    """What evaluation keeps of one frame: ground truth and detections (no sensor data)."""

    frame_id: str
    gt: list[Box3D]
    detections: list[Detection]
    timings_ms: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    labelled: bool = True  # False: the source has no ground truth for it (not: a frame with no objects)


def sim_split_dir(cfg: DetectorConfig, split: str, n_frames: int | None = None) -> Path:
    """Where a fixed simulated split is materialised as a KITTI folder (git-ignored ``data/``)."""
    t = cfg.train
    sizes = {"val": t.val_frames, "calib": t.calib_frames, "test": t.test_frames, "train": t.train_frames}
    n = n_frames or sizes[split]
    return REPO / "data" / "sim" / f"{split}_s{t.seed}_n{n}"


def ensure_sim_split(cfg: DetectorConfig, split: str, n_frames: int | None = None, rig: Rig | None = None,
                     workers: int = 2) -> Path:
    """Generate the split once (deterministic seeds, disjoint per split) and return its folder."""
    from perception.io import write_frames
    from perception.sim import iter_split

    if split not in SIM_SPLITS:
        raise DataError(f"unknown sim split {split!r}; expected one of {SIM_SPLITS}", f"sim:{split}")
    path = sim_split_dir(cfg, split, n_frames)
    if (path / "velodyne").is_dir():
        return path
    rig = rig or Rig.from_yaml(DEFAULT_RIG)
    n = n_frames or int(path.name.rsplit("_n", 1)[1])
    log.info("generating sim:%s (%d frames) into %s", split, n, path)
    frames = iter_split(rig, split, n, seed=cfg.train.seed, frames_per_drive=cfg.train.frames_per_drive,
                        workers=workers)
    write_frames(frames, path, "kitti", rig, total=n)
    return path


def open_source(data: str, cfg: DetectorConfig, limit: int | None = None) -> tuple[Iterable[Frame], int | None]:
    """``sim:<split>``, a KITTI folder or a rosbag2 folder → (frames, count if known)."""
    from perception.io import KittiDataset, open_frames

    if data.startswith("sim:"):
        ds = KittiDataset(ensure_sim_split(cfg, data[4:]))
        n = len(ds) if limit is None else min(limit, len(ds))
        return (ds[i] for i in range(n)), n
    path = Path(data)
    frames = open_frames(path)
    if limit is not None:
        frames = (f for i, f in zip(range(limit), frames))
    return frames, limit


def attach_image_boxes(detections: list[Detection], rig: Rig | None) -> None:
    """Give each detection its 2D image box (the projection of its corners with the frame's ``rig``, as in
    KITTI result files; ``-1 -1 -1 -1``, height 0, when it is not in the image). Without a rig the boxes stay
    ``None`` (no 2D rule applies)."""
    if rig is None:
        return
    for d in detections:
        bbox = project_box_2d(rig, d.box.as_array())
        d.box.bbox2d = NO_IMAGE_BOX.copy() if bbox is None else bbox


#: What evaluation says of a source without any labelled frame.
NO_GROUND_TRUTH = "none: AP, calibration and false positives need labelled frames (detections and latency only)"


def is_labelled(frame: Frame) -> bool:
    """Whether the source has ground truth for ``frame`` (an unlabelled frame is not a frame without objects)."""
    return bool(frame.meta.get("has_labels", True))


def run_detector(detector: FusionDetector, frames: Iterable[Frame], total: int | None = None,
                 drop_camera: bool = False, desc: str = "detect") -> list[FrameRecord]:
    """Run the detector over frames, keeping GT, detections and timings (attention dropped to save memory)."""
    records = []
    for frame in tqdm(frames, total=total, desc=desc, unit="frame"):
        if drop_camera:
            frame.image = None
        result: DetectionResult = detector(frame)
        for d in result.detections:
            d.attention = {}
        attach_image_boxes(result.detections, frame.rig)
        records.append(FrameRecord(frame.frame_id, frame.boxes, result.detections, result.timings_ms, result.degraded,
                                   labelled=is_labelled(frame)))
    return records


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def ap_results(records: list[FrameRecord], classes: list[str], metric: str, difficulty: str,
               range_bin: tuple[float, float] | None = None) -> dict[str, ClassAP]:
    """:func:`evaluate_ap` over the records (raw scores rank the detections)."""
    gt = [r.gt for r in records]
    boxes = [[d.box for d in r.detections] for r in records]
    scores = [np.array([d.score for d in r.detections]) for r in records]
    return evaluate_ap(gt, boxes, scores, classes=classes, metric=metric, difficulty=difficulty, range_bin=range_bin)


def ap_table(records: list[FrameRecord], classes: list[str], metric: str, difficulty: str) -> dict[str, float | None]:
    """AP (percent, devkit convention) per class."""
    res = ap_results(records, classes, metric, difficulty)
    return {c: _nan_to_none(res[c].ap) for c in classes}


def _range_name(lo: float, hi: float) -> str:
    return f">{lo:g}m" if math.isinf(hi) else f"{lo:g}-{hi:g}m"


def ap_summary(records: list[FrameRecord], classes: list[str], difficulty: str, suffix: str = "") -> dict[str, object]:
    """3D and BEV AP per class, devkit (``ap3d``, ``apbev``) and exact R40 (``ap3d_r40``, ``apbev_r40``), the
    counted objects per class (``num_gt``), and, without ``suffix``, 3D AP by range (``ap3d_by_range``)."""
    out: dict[str, object] = {}
    for metric in ("3d", "bev"):
        res = ap_results(records, classes, metric, difficulty)
        out[f"ap{metric}{suffix}"] = {c: _nan_to_none(res[c].ap) for c in classes}
        out[f"ap{metric}_r40{suffix}"] = {c: _nan_to_none(res[c].ap_r40) for c in classes}
        if metric == "3d" and not suffix:
            out["num_gt"] = {c: res[c].num_gt for c in classes}
    if not suffix:
        by_range: dict[str, dict[str, dict[str, float | int | None]]] = {}
        for lo, hi in RANGE_BINS:
            res = ap_results(records, classes, "3d", difficulty, range_bin=(lo, hi))
            by_range[_range_name(lo, hi)] = {c: {"ap": _nan_to_none(res[c].ap), "ap_r40": _nan_to_none(res[c].ap_r40),
                                                 "num_gt": res[c].num_gt} for c in classes}
        out["ap3d_by_range"] = by_range
    return out


def false_positives_per_frame(records: list[FrameRecord], classes: list[str],
                              min_probability: float = FP_PROBABILITY) -> dict[str, float]:
    """Detections with calibrated probability >= ``min_probability`` that match no labelled object of their class
    (the calibration IoU thresholds of :func:`match_correct`), per frame: overall (``all``) and per class."""
    counts = dict.fromkeys(classes, 0)
    for r in records:
        if not r.detections:
            continue
        ok, _ = match_correct(r.gt, [d.box for d in r.detections], np.array([d.score for d in r.detections]))
        for d, good in zip(r.detections, ok):
            if d.probability >= min_probability and not good:
                counts[d.label] = counts.get(d.label, 0) + 1
    n = max(len(records), 1)
    out = {"all": round(sum(counts.values()) / n, 3)}
    out.update({c: round(k / n, 3) for c, k in counts.items()})
    return out


def calibration_stats(records: list[FrameRecord]) -> dict[str, object]:
    """Detection ECE before/after calibration and 1σ/2σ coverage of matched detections."""
    raw, cal, correct, resid, sig = [], [], [], [], []
    for r in records:
        if not r.detections:
            continue
        dets = [d.box for d in r.detections]
        scores = np.array([d.score for d in r.detections])
        ok, gi = match_correct(r.gt, dets, scores)
        raw.append(scores)
        cal.append(np.array([d.probability for d in r.detections]))
        correct.append(ok)
        for d, g in zip(r.detections, gi):
            if g >= 0:
                resid.append(box_residuals(boxes_to_array([r.gt[g]]), d.box.as_array()[None])[0])
                sig.append(d.sigma)
    if not raw:
        return {"dece_before": None, "dece_after": None, "coverage_1sigma": None, "coverage_2sigma": None}
    raw_a, cal_a, ok_a = np.concatenate(raw), np.concatenate(cal), np.concatenate(correct)
    out: dict[str, object] = {
        "dece_before": _nan_to_none(detection_ece(raw_a, ok_a)),
        "dece_after": _nan_to_none(detection_ece(cal_a, ok_a)),
        "num_detections": int(len(raw_a)), "num_correct": int(ok_a.sum()),
    }
    if resid:
        e, s = np.array(resid), np.array(sig)
        c1, c2 = interval_coverage(e, s, 1.0), interval_coverage(e, s, 2.0)
        out.update({"coverage_1sigma": _nan_to_none(float(c1.mean())),
                    "coverage_2sigma": _nan_to_none(float(c2.mean())),
                    "coverage_per_param": {p: [round(float(a), 3), round(float(b), 3)]
                                           for p, a, b in zip(("x", "y", "z", "l", "w", "h", "yaw"), c1, c2)}})
    else:
        out.update({"coverage_1sigma": None, "coverage_2sigma": None})
    return out


def latency_stats(records: list[FrameRecord]) -> dict[str, dict[str, float]]:
    """p50/p99 per stage (ms) over the records (first frame skipped as warm-up)."""
    rows = [r.timings_ms for r in records[1:] if "network" in r.timings_ms] or [r.timings_ms for r in records]
    stats = {}
    for key in sorted({k for r in rows for k in r}):
        v = np.array([r[key] for r in rows if key in r])
        stats[key] = {"p50": round(float(np.percentile(v, 50)), 2), "p99": round(float(np.percentile(v, 99)), 2)}
    total = np.array([sum(r.values()) for r in rows]) if rows else np.zeros(1)
    stats["total"] = {"p50": round(float(np.percentile(total, 50)), 2),
                      "p99": round(float(np.percentile(total, 99)), 2)}
    return stats


def difficulty_for(records: list[FrameRecord]) -> str:
    """``moderate`` when GT carry 2D boxes (KITTI, sim), else ``none``."""
    boxes = [b for r in records for b in r.gt]
    return "moderate" if boxes and all(b.bbox2d is not None for b in boxes) else "none"


def fit_calibration_from_records(records: list[FrameRecord], fitted_on: str) -> Calibration:
    """Fit per-class temperature/bias and per-parameter variance scales from uncalibrated detections."""
    by_class: dict[str, tuple[list[float], list[bool]]] = {}
    resid, sig = [], []
    for r in records:
        if not r.detections:
            continue
        dets = [d.box for d in r.detections]
        scores = np.array([d.score for d in r.detections])
        ok, gi = match_correct(r.gt, dets, scores)
        for d, good, g in zip(r.detections, ok, gi):
            s = min(max(d.score, 1e-6), 1 - 1e-6)
            logits, flags = by_class.setdefault(d.label, ([], []))
            logits.append(math.log(s / (1 - s)))
            flags.append(bool(good))
            if g >= 0:
                resid.append(box_residuals(boxes_to_array([r.gt[g]]), d.box.as_array()[None])[0])
                sig.append(d.sigma)
    cal = Calibration(fitted_on=fitted_on, num_detections=sum(len(v[0]) for v in by_class.values()))
    for label, (logits, flags) in by_class.items():
        t, b = fit_temperature(np.array(logits), np.array(flags))
        cal.temperature[label], cal.bias[label] = t, b
    if resid:
        cal.variance_scale = fit_variance_scale(np.array(resid), np.array(sig))
    return cal


def evaluate(detector: FusionDetector, data: str, cfg: DetectorConfig, limit: int | None = None,
             lidar_only: bool = True, report_dir: Path | None = None, pictures: int | None = None,
             stage_latency: bool = True) -> dict[str, object]:
    """Full evaluation of ``detector`` on ``data``; returns the metrics (the ``--json`` document).

    ``pictures`` frames are drawn in the report; by default 3 of a simulated split and every frame (up to
    :data:`MAX_REAL_PICTURES`) of real data.
    """
    from perception.detector.api import engine_inputs
    from perception.detector.inputs import prepare_frame
    from perception.eval.latency import torch_stage_latency
    from perception.eval.report import plot_frame, plot_reliability, write_html

    classes = list(cfg.model.classes)
    if pictures is None:
        pictures = 3 if data.startswith("sim:") else MAX_REAL_PICTURES
    frames, total = open_source(data, cfg, limit)
    kept: list[Frame] = []

    def keep_some(it: Iterable[Frame]) -> Iterable[Frame]:
        for f in it:
            if len(kept) < pictures:
                kept.append(f)
            yield f

    records = run_detector(detector, keep_some(frames), total, desc=f"eval {data}")
    if not records:
        raise DataError("no frames to evaluate", data)
    # Unlabelled frames have no ground truth, not zero objects: accuracy and calibration use the labelled ones.
    scored = [r for r in records if r.labelled]
    difficulty = difficulty_for(scored)
    metrics: dict[str, object] = {
        "data": data, "model": detector.model_id, "frames": len(records), "labelled_frames": len(scored),
        "difficulty": difficulty,
    }
    if scored:
        metrics["ap_convention"] = ("ap3d/apbev: KITTI devkit AP_R40 (OpenPCDet kitti_object_eval_python, "
                                    "get_thresholds); *_r40: exact AP|R40; IoU Car 0.7, Pedestrian/Cyclist 0.5")
        metrics.update(ap_summary(scored, classes, difficulty))
        metrics.update(calibration_stats(scored))
        metrics["fp_per_frame_p50"] = false_positives_per_frame(scored, classes)
    else:
        metrics["ground_truth"] = NO_GROUND_TRUTH
    metrics["latency_ms"] = latency_stats(records)
    if stage_latency and kept and hasattr(detector.engine, "net"):
        inp = prepare_frame(kept[0], detector.cfg)
        if len(inp.pillars.coords):
            metrics["latency_ms"]["torch_stages"] = {
                k: round(v, 2) for k, v in torch_stage_latency(detector.engine.net, engine_inputs(inp)).items()}
    if lidar_only and scored:
        frames2, total2 = open_source(data, cfg, limit)
        rec2 = run_detector(detector, (f for f in frames2 if is_labelled(f)), total2, drop_camera=True,
                            desc="eval lidar-only")
        metrics.update(ap_summary(rec2, classes, difficulty, suffix="_lidar_only"))
        car, car_lo = metrics["ap3d"].get("Car"), metrics["ap3d_lidar_only"].get("Car")  # type: ignore[union-attr]
        metrics["lidar_only_car_retention"] = round(car_lo / car, 4) if car and car_lo is not None else None
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        images = []
        by_id = {r.frame_id: r for r in records}
        for f in kept:
            name = f"frame_{f.frame_id.replace('/', '_')}.png"
            plot_frame(f, by_id[f.frame_id].detections, report_dir / name, title=f"{data} {f.frame_id}")
            images.append(name)
        dets = [d for r in scored for d in r.detections]
        if dets:
            ok = np.concatenate([match_correct(r.gt, [d.box for d in r.detections],
                                               np.array([d.score for d in r.detections]))[0]
                                 for r in scored if r.detections])
            plot_reliability(np.array([d.score for d in dets]), np.array([d.probability for d in dets]), ok,
                             report_dir / "reliability.png")
            images.append("reliability.png")
        write_html(report_dir, metrics, images, title=f"{detector.model_id} on {data}")
        metrics["report"] = str(report_dir / "index.html")
    return metrics

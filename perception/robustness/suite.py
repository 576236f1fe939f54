"""Run the corruption suite: every frame clean and under each (corruption, severity), with the detector, the
sensor-health checks and the OOD monitor; then AP, resistance ability, calibration and flag shares.

RA (resistance ability, MultiCorrupt) of a (corruption, severity) is the mean 3D AP over the classes that
have a clean AP, under the corruption, divided by the same mean on the clean frames (the same frames: a
corruption not applicable to some frames is compared on the rest); mRA is the mean RA over every evaluated
(corruption, severity).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from perception.detector.api import FusionDetector
from perception.errors import DataError
from perception.eval.evaluate import FrameRecord, ap_table, calibration_stats
from perception.frame import Frame
from perception.ood.monitor import OodMonitor
from perception.robustness.corruptions import NotApplicable, check_severity, corrupt, get_corruption
from perception.trust.calibration import Calibration
from perception.trust.health import Level, frame_checks
from perception.trust.shift_calibration import calibrate_for_flags

log = logging.getLogger(__name__)
#: The frame score the OOD monitor flags a frame by.
OOD_FRAME_SCORE = "frame"
CLEAN = ("clean", 0)


@dataclass
class SuiteRecord:
    """One detector run: the evaluation record plus whether each monitor flagged the input."""

    record: FrameRecord
    health: bool  # a sensor-health content check at WARN or worse
    ood: bool  # the OOD monitor's frame score above its threshold
    health_lidar: bool = False  # a LiDAR (point count / NaN share) health check at WARN or worse
    ood_lidar: bool = False  # the OOD frame score of the embedding's LiDAR part above its threshold

    @property
    def flagged(self) -> bool:
        """Either monitor flagged the input."""
        return self.health or self.ood

    @property
    def lidar_flagged(self) -> bool:
        """A monitor flagged the LiDAR input: what the flagged-input calibration acts on (the detector's scores
        and boxes come mostly from the LiDAR; a camera fault alone leaves them calibrated)."""
        return self.health_lidar or self.ood_lidar


@dataclass
class SuiteRun:
    """Every record of a suite run, keyed by (corruption, severity); ``("clean", 0)`` for the clean frames."""

    records: dict[tuple[str, int], list[SuiteRecord]] = field(default_factory=dict)
    not_applicable: dict[tuple[str, int], int] = field(default_factory=dict)
    frames: int = 0
    seconds_per_frame: float = 0.0  # wall time of one frame through clean + every corruption


def run_one(detector: FusionDetector, monitor: OodMonitor | None, frame: Frame) -> SuiteRecord:
    """Detect on ``frame`` and grade its input with both monitors."""
    result = detector(frame)
    ood = ood_lidar = False
    if monitor is not None and result.frame_embedding is not None:
        ood = monitor.score_result(result).frame_flag(OOD_FRAME_SCORE)
        ood_lidar = monitor.score_result(result, lidar_part=True).frame_flag(OOD_FRAME_SCORE)
    for d in result.detections:
        d.attention = {}
    rec = FrameRecord(frame.frame_id, frame.boxes, result.detections, result.timings_ms, result.degraded)
    checks = frame_checks(frame)
    return SuiteRecord(rec, health=any(c.level >= Level.WARN for c in checks), ood=ood,
                       health_lidar=any(c.level >= Level.WARN for c in checks if c.sensor == "lidar"),
                       ood_lidar=ood_lidar)


def check_selection(corruptions: Sequence[str], severities: Sequence[int]) -> tuple[list[str], list[int]]:
    """Validate the names and severities (ConfigError listing the valid ones)."""
    for name in corruptions:
        get_corruption(name)
    return list(corruptions), [check_severity(s) for s in severities]


def run_suite(detector: FusionDetector, monitor: OodMonitor | None, frames: Iterable[Frame], total: int | None,
              corruptions: Sequence[str], severities: Sequence[int], seed: int = 0,
              frames_per_sequence: int = 1) -> SuiteRun:
    """Every frame clean and under each (corruption, severity). Frames ``i`` and ``j`` belong to the same sequence
    when ``i // frames_per_sequence == j // frames_per_sequence`` (0: all frames are one sequence); a corruption
    needing earlier frames of the sequence skips the frames that have too few."""
    import time

    corruptions, severities = check_selection(corruptions, severities)
    run = SuiteRun()
    keys = [CLEAN] + [(n, s) for n in corruptions for s in severities]
    for key in keys:
        run.records[key] = []
        run.not_applicable[key] = 0
    history: deque[Frame] = deque(maxlen=max(severities, default=1) + 2)
    bar = tqdm(total=None if total is None else total * len(keys), desc="robustness", unit="run")
    t0 = time.perf_counter()
    for i, frame in enumerate(frames):
        if frames_per_sequence > 0 and i % frames_per_sequence == 0:
            history.clear()
        for name, sev in keys:
            bar.update(1)
            try:
                f = frame if name == "clean" else corrupt(frame, name, sev, seed, tuple(history))
            except NotApplicable:
                run.not_applicable[(name, sev)] += 1
                continue
            run.records[(name, sev)].append(run_one(detector, monitor, f))
        history.append(frame)
        run.frames += 1
        bar.set_postfix(frame=frame.frame_id)
    bar.close()
    if run.frames == 0:
        raise DataError("no frames to run the robustness suite on", "data")
    run.seconds_per_frame = (time.perf_counter() - t0) / run.frames
    return run


def _mean_ap(ap: dict[str, float | None], classes: Sequence[str]) -> float | None:
    vals = [ap[c] for c in classes if ap.get(c) is not None]
    return float(np.mean(vals)) if vals else None


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def cell_metrics(rows: list[SuiteRecord], classes: list[str], difficulty: str,
                 shift_calibration: Calibration | None) -> dict[str, object]:
    """AP, D-ECE, 1σ coverage and flag shares of one (corruption, severity) or the clean frames."""
    recs = [r.record for r in rows]
    if not recs:
        return {"frames": 0}
    cal = calibration_stats(recs)
    out: dict[str, object] = {
        "frames": len(recs),
        "ap3d": ap_table(recs, classes, "3d", difficulty),
        "dece": cal["dece_after"], "coverage_1sigma": cal["coverage_1sigma"],
        "flagged": _round(np.mean([r.flagged for r in rows])),
        "flagged_health": _round(np.mean([r.health for r in rows])),
        "flagged_ood": _round(np.mean([r.ood for r in rows])),
        "flagged_lidar": _round(np.mean([r.lidar_flagged for r in rows])),
        "lidar_only": _round(np.mean([not _camera_used(r.record) for r in rows])),
    }
    if shift_calibration is not None:
        fixed = [FrameRecord(r.record.frame_id, r.record.gt,
                             calibrate_for_flags(r.record.detections, r.lidar_flagged, shift_calibration))
                 for r in rows]
        cal_fixed = calibration_stats(fixed)
        out["dece_fixed"] = cal_fixed["dece_after"]
        out["coverage_1sigma_fixed"] = cal_fixed["coverage_1sigma"]
    return out


def _camera_used(rec: FrameRecord) -> bool:
    from perception.detector.result import camera_used

    return camera_used(rec.degraded)


def summarize(run: SuiteRun, classes: list[str], difficulty: str,
              shift_calibration: Calibration | None = None) -> dict[str, object]:
    """The suite's JSON document: ``{"mRA", "clean", "corruptions": {name: {"1": {...}, ...}}, ...}``."""
    clean_rows = run.records[CLEAN]
    clean = cell_metrics(clean_rows, classes, difficulty, shift_calibration)
    clean_by_id = {r.record.frame_id: r for r in clean_rows}
    corr: dict[str, dict[str, object]] = {}
    ras: list[float] = []
    for (name, sev), rows in run.records.items():
        if name == "clean":
            continue
        cell = cell_metrics(rows, classes, difficulty, shift_calibration)
        cell["not_applicable"] = run.not_applicable[(name, sev)]
        cell["level"] = get_corruption(name).levels[sev - 1]
        ra = None
        if rows:
            base = clean if len(rows) == len(clean_rows) else {
                "ap3d": ap_table([clean_by_id[r.record.frame_id].record for r in rows], classes, "3d", difficulty)}
            ref_classes = [c for c in classes if base["ap3d"].get(c)]  # type: ignore[union-attr]
            num = _mean_ap(cell["ap3d"], ref_classes)  # type: ignore[arg-type]
            den = _mean_ap(base["ap3d"], ref_classes)  # type: ignore[arg-type]
            if num is not None and den:
                ra = num / den
                ras.append(ra)
            if base is not clean:
                cell["clean_ap3d_same_frames"] = base["ap3d"]
        cell["ra"] = _round(ra)
        corr.setdefault(name, {})[str(sev)] = cell
    for cells in corr.values():
        vals = [c["ra"] for c in cells.values() if c.get("ra") is not None]  # type: ignore[union-attr]
        cells["mean_ra"] = _round(float(np.mean(vals))) if vals else None
    return {"mRA": _round(float(np.mean(ras))) if ras else None, "clean": clean, "corruptions": corr,
            "frames": run.frames, "seconds_per_frame": round(run.seconds_per_frame, 2),
            "ra_definition": "mean 3D AP over classes with a clean AP, corrupted / clean, on the same frames"}


def fit_flagged_calibration(run: SuiteRun, fitted_on: str) -> Calibration:
    """A flagged-input calibration (:mod:`perception.trust.shift_calibration`) from every run (clean or corrupted)
    whose LiDAR input a monitor flagged: the frames it will be applied to."""
    from perception.eval.evaluate import fit_calibration_from_records

    recs = [r.record for rows in run.records.values() for r in rows if r.lidar_flagged]
    if not recs:
        raise DataError("no frame's LiDAR input was flagged: nothing to fit a flagged-input calibration on", fitted_on)
    return fit_calibration_from_records(recs, fitted_on)

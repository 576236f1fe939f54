"""The OOD benchmark behind ``perception eval-ood``: AUROC and FPR@95TPR per shift and score.

Unknown objects: detections (raw score >= ``min_score``) matched to unknown-object boxes vs detections
matched to known-class boxes in the clean frames. Conditions: the frame scores of the shifted frames vs
those of the clean frames simulated from the same drive seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perception.detector.api import FusionDetector
from perception.frame import OOD_CLASSES, Frame
from perception.io import KittiDataset
from perception.ood.collect import FeatureSet, collect_frames
from perception.ood.fit import DEFAULT_MIN_SCORE, id_detections, score_feature_set
from perception.ood.metrics import auroc, fpr_at_tpr
from perception.ood.monitor import OodMonitor
from perception.ood.shifts import CLEAN, OOD_DATA, SHIFTS, Shift, ensure_shift_frames
from perception.rig import Rig

log = logging.getLogger(__name__)


@dataclass
class ShiftScores:
    """ID and OOD score samples of one shift, per score name."""

    shift: Shift
    id_scores: dict[str, np.ndarray]
    ood_scores: dict[str, np.ndarray]
    extra: dict[str, int] = field(default_factory=dict)  # counts (unknown boxes present, ...)


def _count_unknown(frames: Iterable[Frame], counter: dict[str, int]) -> Iterator[Frame]:
    for f in frames:
        counter["unknown_boxes"] = counter.get("unknown_boxes", 0) + sum(
            b.label in OOD_CLASSES and b.num_points != 0 for b in f.boxes)
        yield f


def _features(detector: FusionDetector, path: Path, name: str, counter: dict[str, int],
              camera: bool = True) -> FeatureSet:
    ds = KittiDataset(path)
    return collect_frames(detector, _count_unknown((ds[i] for i in range(len(ds))), counter), len(ds),
                          desc=f"ood {name}{'' if camera else ' (no camera)'}", camera=camera)


def collect_shift_scores(detector: FusionDetector, monitor: OodMonitor, rig: Rig, n_frames: int, seed: int = 0,
                         min_score: float = DEFAULT_MIN_SCORE, shifts: tuple[Shift, ...] = SHIFTS,
                         root: Path = OOD_DATA, workers: int = 2, camera: bool = True) -> list[ShiftScores]:
    """Simulate (or reuse) the frames of every shift, run the detector and score ID vs OOD samples;
    ``camera=False`` runs every frame, clean or shifted, without its image (a camera failure): frames are then
    scored on the LiDAR part of their embedding."""
    classes = monitor.stats.classes
    clean = _features(detector, ensure_shift_frames(rig, CLEAN, n_frames, seed, root, workers), "clean", {}, camera)
    clean_det, clean_frame = score_feature_set(monitor, clean, camera)
    id_mask = id_detections(clean, classes, min_score)
    out = []
    for shift in shifts:
        counter: dict[str, int] = {}
        fs = _features(detector, ensure_shift_frames(rig, shift, n_frames, seed, root, workers), shift.name, counter,
                       camera)
        det, frame = score_feature_set(monitor, fs, camera)
        if shift.unit == "detection":
            ood_mask = np.isin(fs.matched, list(OOD_CLASSES)) & (fs.scores >= min_score)
            counter["unknown_matched"] = int(np.isin(fs.matched, list(OOD_CLASSES)).sum())
            out.append(ShiftScores(shift, {k: v[id_mask] for k, v in clean_det.items()},
                                   {k: v[ood_mask] for k, v in det.items()}, counter))
        else:
            out.append(ShiftScores(shift, dict(clean_frame), dict(frame), counter))
    return out


def _metric(fn, a: np.ndarray, b: np.ndarray) -> float | None:
    return round(float(fn(a, b)), 4) if len(a) and len(b) else None


def summarize(results: list[ShiftScores], monitor: OodMonitor, camera: bool = True) -> dict[str, object]:
    """The ``--json`` document: ``auroc`` / ``fpr95`` (shift -> score -> value), flag rates at the saved
    thresholds (the LiDAR part's frame thresholds when ``camera`` is False), sample counts and the unit of
    every shift."""
    doc: dict[str, dict] = {"auroc": {}, "fpr95": {}, "ood_flagged": {}, "id_flagged": {}, "counts": {}, "units": {}}
    for r in results:
        name, level = r.shift.name, r.shift.unit
        doc["units"][name] = level
        doc["auroc"][name] = {k: _metric(auroc, r.id_scores[k], r.ood_scores[k]) for k in r.ood_scores}
        doc["fpr95"][name] = {k: _metric(fpr_at_tpr, r.id_scores[k], r.ood_scores[k]) for k in r.ood_scores}
        th = monitor.stats.thresholds_for(camera)[level]
        doc["ood_flagged"][name] = {k: round(float(np.mean(v > th[k])), 4) if len(v) else None
                                    for k, v in r.ood_scores.items() if k in th}
        doc["id_flagged"][level] = {k: round(float(np.mean(v > th[k])), 4) if len(v) else None
                                    for k, v in r.id_scores.items() if k in th}
        n_id = len(next(iter(r.id_scores.values()), []))
        n_ood = len(next(iter(r.ood_scores.values()), []))
        doc["counts"][name] = {"id": n_id, "ood": n_ood, **r.extra}
    return doc


def plot_histograms(results: list[ShiftScores], path: Path) -> Path:
    """One row per shift, one panel per score: ID vs OOD score histograms with the AUROC in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(r.ood_scores) for r in results)
    fig, axes = plt.subplots(len(results), cols, figsize=(3.2 * cols, 2.3 * len(results)), squeeze=False)
    for row, r in zip(axes, results):
        for ax, name in zip(row, r.ood_scores):
            a, b = r.id_scores[name], r.ood_scores[name]
            both = np.concatenate([a, b])
            if len(a) and len(b) and np.ptp(both) > 0:
                bins = np.linspace(np.percentile(both, 0.5), np.percentile(both, 99.5), 30)
                ax.hist(np.clip(a, bins[0], bins[-1]), bins, density=True, alpha=0.55, label=f"ID ({len(a)})")
                ax.hist(np.clip(b, bins[0], bins[-1]), bins, density=True, alpha=0.55, label=f"OOD ({len(b)})")
                ax.set_title(f"{r.shift.name}: {name}\nAUROC {auroc(a, b):.3f}", fontsize=8)
                ax.legend(fontsize=6)
            else:
                ax.set_title(f"{r.shift.name}: {name}\n(no samples)", fontsize=8)
            ax.tick_params(labelsize=6)
        for ax in row[len(r.ood_scores):]:
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

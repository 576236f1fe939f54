"""K-fold cross-validation of the detector over labelled real frames: fine-tune on k-1 folds, detect on the
held-out fold, and compute every metric on the pooled out-of-fold detections (each frame is scored by a
model that never saw it)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from perception.detector.api import FusionDetector
from perception.detector.checkpoint import load_model
from perception.detector.config import DetectorConfig
from perception.detector.finetune import finetune
from perception.detector.model import FusionNet
from perception.detector.train import train
from perception.engines.torch_engine import TorchEngine
from perception.errors import ConfigError, DataError
from perception.eval.evaluate import (
    FrameRecord,
    ap_summary,
    calibration_stats,
    difficulty_for,
    false_positives_per_frame,
    run_detector,
)
from perception.frame import Frame
from perception.io import KittiDataset

log = logging.getLogger(__name__)


def kfold(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint folds of the indices ``0..n-1`` (shuffled with ``seed``, sizes differing by at most 1)."""
    if not 2 <= k <= n:
        raise ConfigError(f"need 2 <= folds <= frames, got {k} folds for {n} frames", "crossval: --folds")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def crossval(model_dir: Path, data: Path, folds: int = 4, seed: int = 0, steps: int = 100, lr: float = 2e-4,
             report_dir: Path | None = None) -> dict[str, object]:
    """Cross-validate ``model_dir`` on the labelled KITTI folder ``data``; returns the metrics document.

    When the model's recipe trains on labelled real frames (``train.real_share > 0``), each fold re-runs that
    recipe from its ``train.init_from`` weights with the other folds' frames as the real data, so no frame is
    scored by weights that saw it (``steps``/``lr`` are then unused). Otherwise the shipped weights are
    fine-tuned for ``steps`` steps (seed ``seed + fold``) on the other folds' frames; ``steps = 0`` evaluates
    the shipped weights fold by fold. The shipped calibration is kept.
    """
    ds = KittiDataset(data)
    if not ds.has_labels:
        raise DataError("cross-validation needs labels (label_2/)", str(ds.root))
    frames: list[Frame] = list(ds)
    net, cfg, calibration = load_model(model_dir)
    parts = kfold(len(frames), folds, seed)
    recipe = cfg.train.real_share > 0
    if recipe and not cfg.train.init_from:
        raise ConfigError("a recipe trained on real frames needs train.init_from to re-run it per fold",
                          f"{model_dir}/config.yaml")
    records: list[FrameRecord] = []
    fold_of: dict[str, int] = {}
    for f, held in enumerate(parts):
        train_frames = [frames[i] for i in range(len(frames)) if i not in set(held.tolist())]
        if recipe:
            tuned = _retrain_fold(cfg, train_frames)
        else:
            tuned = finetune(net, train_frames, cfg, steps, lr=lr, seed=seed + f, desc=f"fold {f + 1}/{folds}")
        detector = FusionDetector(cfg.model, TorchEngine(tuned), calibration, model_id=f"{cfg.model.name}@fold{f}")
        records += run_detector(detector, (frames[i] for i in held), total=len(held), desc=f"fold {f + 1} detect")
        fold_of.update({frames[i].frame_id: f for i in held})
    classes = list(cfg.model.classes)
    difficulty = difficulty_for(records)
    metrics: dict[str, object] = {
        "data": str(data), "model": str(model_dir), "frames": len(records), "difficulty": difficulty,
        "folds": {"k": folds, "seed": seed, "frames": [[frames[i].frame_id for i in p] for p in parts]},
        "finetune": ({"recipe": f"train stage re-run per fold from {cfg.train.init_from}",
                      "steps": cfg.train.max_steps, "real_share": cfg.train.real_share,
                      "seeds": [cfg.train.seed] * folds} if recipe else
                     {"steps": steps, "lr": lr, "seeds": [seed + f for f in range(folds)],
                      "batch_size": min(cfg.train.batch_size, max(len(frames) - len(p) for p in parts))}),
        "calibration": "shipped (fitted on sim:calib), not refitted per fold",
        "ap_convention": "ap3d/apbev: KITTI devkit AP_R40 (get_thresholds); *_r40: exact AP|R40; "
                         "IoU Car 0.7, Pedestrian/Cyclist 0.5; out-of-fold detections pooled",
    }
    metrics.update(ap_summary(records, classes, difficulty))
    metrics.update(calibration_stats(records))
    metrics["fp_per_frame_p50"] = false_positives_per_frame(records, classes)
    if report_dir is not None:
        _write_report(report_dir, frames, records, fold_of, metrics)
    return metrics


def _retrain_fold(cfg: DetectorConfig, train_frames: list[Frame]) -> FusionNet:
    """The model's own training stage (same seed, same simulated data), re-run with only ``train_frames`` as
    labelled real data."""
    with tempfile.TemporaryDirectory(prefix="crossval_fold_") as tmp:
        net, _ = train(cfg, Path(tmp), real_frames=train_frames)
    return net


def _write_report(report_dir: Path, frames: list[Frame], records: list[FrameRecord], fold_of: dict[str, int],
                  metrics: dict[str, object]) -> None:
    """Every frame (BEV + camera, labels and its out-of-fold predictions) and the metrics as HTML."""
    from perception.eval.report import plot_frame, write_html

    report_dir.mkdir(parents=True, exist_ok=True)
    by_id = {r.frame_id: r for r in records}
    images = []
    for f in frames:
        name = f"frame_{f.frame_id.replace('/', '_')}.png"
        plot_frame(f, by_id[f.frame_id].detections, report_dir / name,
                   title=f"{f.frame_id} (held out in fold {fold_of[f.frame_id] + 1})")
        images.append(name)
    write_html(report_dir, metrics, images, title=f"cross-validation of {metrics['model']} on {metrics['data']}")
    metrics["report"] = str(report_dir / "index.html")

"""Fit OOD statistics: Gaussians on training-split features, thresholds at 95 % TPR on validation.

Training and validation data are the detector's caches of simulated samples (``data/cache/<model>/train_*``,
``val_*``, no simulation needed); a split with fewer cached samples than asked for is simulated into a cache of
that size first (and kept).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from perception.detector.api import FusionDetector
from perception.detector.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from perception.detector.config import DetectorConfig
from perception.errors import DataError
from perception.frame import Frame
from perception.ood.collect import FeatureSet, collect_frames, collect_samples, load_detector
from perception.ood.gaussian import GaussianModel, fit_gaussian_model
from perception.ood.metrics import threshold_at_tpr
from perception.ood.monitor import LIDAR_FRAME_SCORES, OodMonitor, descriptor_dim
from perception.ood.scores import energy_score
from perception.ood.stats import GeometryModel, LidarFrameModel, OodStats, engine_family, file_sha256

log = logging.getLogger(__name__)

#: Detections below this raw score are not used to fit or to set thresholds (they are mostly background).
DEFAULT_MIN_SCORE = 0.1


def score_feature_set(monitor: OodMonitor, fs: FeatureSet,
                      camera: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(detection scores (N,) per name, frame scores (F,) per name)`` of a collected :class:`FeatureSet`;
    ``camera=False`` scores the frames as LiDAR-only ones (:meth:`OodMonitor.frame_scores`)."""
    det = monitor.detection_scores(fs.features, fs.logits, fs.geometry, where="feature set")
    frames: dict[str, list[float]] = {}
    for k in range(fs.num_frames):
        rows = fs.frame_index == k
        scores = monitor.frame_scores(fs.embeddings[k], fs.features[rows], {n: s[rows] for n, s in det.items()},
                                      camera=camera)
        for name, v in scores.items():
            frames.setdefault(name, []).append(v)
    return det, {name: np.asarray(v) for name, v in frames.items()}


def id_detections(fs: FeatureSet, classes: tuple[str, ...], min_score: float) -> np.ndarray:
    """(N,) mask of detections matched to a known-class ground-truth box with score >= ``min_score``."""
    return np.isin(fs.matched, list(classes)) & (fs.scores >= min_score)


def _descriptors(monitor: OodMonitor, fs: FeatureSet, det: dict[str, np.ndarray],
                 embedding_dim: int | None = None) -> list[np.ndarray]:
    """Frame descriptors of ``fs``, on the first ``embedding_dim`` embedding values (default: all)."""
    rows = [fs.frame_index == k for k in range(fs.num_frames)]
    return [monitor.frame_descriptor(fs.embeddings[k, :embedding_dim], fs.features[r],
                                     {n: s[r] for n, s in det.items()}) for k, r in enumerate(rows)]


def fit_stats(train: FeatureSet, val: FeatureSet, classes: tuple[str, ...], min_score: float = DEFAULT_MIN_SCORE,
              tpr: float = 0.95, meta: dict | None = None, lidar_dim: int | None = None,
              no_camera: tuple[FeatureSet, FeatureSet] | None = None) -> OodStats:
    """Fit on ``train``: class Gaussians of the detections matched to known classes, a Gaussian of the frame
    embeddings and one of the frame descriptors (every detection of a frame counts, as at run time). On
    ``val``: the fill values of empty frames and every threshold, at ``tpr`` of the ID detections / frames.
    With ``lidar_dim``, the same frame models on the embedding's LiDAR part (its first ``lidar_dim`` values,
    which the camera does not touch) for frames without a camera, thresholds under ``"frame_lidar"``: fitted on
    ``no_camera`` (the train and val frames run without their images: without the image, the queries' features
    move too) or, without it, on ``train`` and ``val``."""
    keep = id_detections(train, classes, min_score)
    if keep.sum() < 2 * len(classes):
        raise DataError(f"only {int(keep.sum())} training detections matched to {classes} with score >= "
                        f"{min_score}; is the model trained?", "fit_stats.train")
    labels = np.array([classes.index(c) for c in train.matched[keep]])
    det_model = fit_gaussian_model(train.features[keep], labels, len(classes), where="fit_stats.train.features")
    frame_model = fit_gaussian_model(train.embeddings, where="fit_stats.train.embeddings")
    p = descriptor_dim(det_model.dim, frame_model.dim)
    stats = OodStats(classes=tuple(classes), detection=det_model, frame=frame_model,
                     descriptor=GaussianModel(np.zeros((1, p)), np.eye(p)), descriptor_fill=np.zeros(p),
                     frame_norm={}, thresholds={}, tpr=tpr, meta=meta or {})
    monitor = OodMonitor(stats)
    if train.geometry is not None:
        stats.geometry = fit_geometry_model(train, keep, labels, len(classes))
    train_det = monitor.detection_scores(train.features, train.logits, train.geometry, where="fit_stats.train")
    has_dets = np.bincount(train.frame_index, minlength=train.num_frames) > 0
    if not has_dets.any():
        raise DataError("no training frame has a detection", "fit_stats.train")
    stats.descriptor_fill = np.mean(np.array(_descriptors(monitor, train, train_det))[has_dets], axis=0)
    stats.descriptor = fit_gaussian_model(np.array(_descriptors(monitor, train, train_det)),
                                          where="fit_stats.train.descriptors")
    lidar_train, lidar_val = no_camera or (train, val)
    if lidar_dim:
        lidar_det = monitor.detection_scores(lidar_train.features, lidar_train.logits, lidar_train.geometry,
                                             where="fit_stats.no_camera.train")
        stats.lidar = LidarFrameModel(
            lidar_dim, fit_gaussian_model(lidar_train.embeddings[:, :lidar_dim],
                                          where="fit_stats.no_camera.train.embeddings[lidar]"),
            fit_gaussian_model(np.array(_descriptors(monitor, lidar_train, lidar_det, lidar_dim)),
                               where="fit_stats.no_camera.train.descriptors[lidar]"))
    # Means over no detections are reported as the validation mean; thresholds at `tpr` of validation.
    val_det = monitor.detection_scores(val.features, val.logits, val.geometry, where="fit_stats.val")
    for name, values in val_det.items():
        per_frame = [values[val.frame_index == k] for k in range(val.num_frames)]
        stats.frame_norm[f"mean_{name}"] = _mean_std(np.array([v.mean() for v in per_frame if len(v)]))
    _, val_frame = score_feature_set(monitor, val)
    val_keep = id_detections(val, classes, min_score)
    if not val_keep.any():
        raise DataError(f"no validation detections matched to {classes} with score >= {min_score}", "fit_stats.val")
    stats.thresholds = {
        "detection": {name: threshold_at_tpr(v[val_keep], tpr) for name, v in val_det.items()},
        "frame": {name: threshold_at_tpr(v, tpr) for name, v in val_frame.items()},
    }
    if stats.lidar is not None:
        _, val_lidar = score_feature_set(monitor, lidar_val, camera=False)
        stats.thresholds["frame_lidar"] = {name: threshold_at_tpr(val_lidar[name], tpr) for name in LIDAR_FRAME_SCORES}
    per_class = {c: int((train.matched[keep] == c).sum()) for c in classes}
    stats.meta.setdefault("fitted_on", {}).update({
        "train_frames": train.num_frames, "train_detections": per_class, "val_frames": val.num_frames,
        "val_detections": int(val_keep.sum()), "min_score": min_score})
    return stats


def fit_geometry_model(train: FeatureSet, keep: np.ndarray, labels: np.ndarray, num_classes: int) -> GeometryModel:
    """One Gaussian per class of the point-geometry descriptors of the ``keep`` training detections (matched
    class ``labels``), and the training mean / std of ``energy`` and ``geometry`` over them."""
    geo = np.asarray(train.geometry, dtype=np.float64)[keep]
    per_class = [fit_gaussian_model(geo[labels == c], where=f"fit_stats.train.geometry[class {c}]")
                 for c in range(num_classes)]
    model = GeometryModel(np.concatenate([g.means for g in per_class]), np.stack([g.precision for g in per_class]),
                          {"energy": (0.0, 1.0), "geometry": (0.0, 1.0)})
    logits = np.asarray(train.logits, dtype=np.float64)[keep]
    energy = energy_score(logits)
    dist = model.distances(geo, logits.argmax(axis=1), "fit_stats.train.geometry")
    return dataclasses.replace(model, norm={"energy": _mean_std(energy), "geometry": _mean_std(dist)})


def _mean_std(v: np.ndarray) -> tuple[float, float]:
    if len(v) == 0:
        return 0.0, 1.0
    return float(np.mean(v)), float(max(np.std(v), 1e-6))


def _evenly(paths: list[Path], n: int) -> list[Path]:
    if n >= len(paths):
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, n).round().astype(int)]


def split_features(detector: FusionDetector, cfg: DetectorConfig, split: str, n_frames: int,
                   camera: bool = True) -> tuple[FeatureSet, str]:
    """Features of ``n_frames`` frames of ``split`` (train | val), evenly spaced over the largest cache of
    simulated samples of that split and seed (``data/cache/<model>/<split>_s<seed>_n<N>``, the training
    cache); when it holds fewer than ``n_frames``, a cache of ``n_frames`` is simulated (and kept) first.
    ``camera=False`` runs the frames without their images. Returns the set and a description of its source."""
    from perception.detector.data import build_cache
    from perception.detector.train import cache_dir
    from perception.eval.evaluate import DEFAULT_RIG
    from perception.rig import Rig

    t = cfg.train
    caches = [cache_dir(cfg, split), *cache_dir(cfg, split).parent.glob(f"{split}_s{t.seed}_n*")]
    best, paths = None, []
    for root in caches:
        found = sorted(p for p in root.glob("*.npz") if not p.name.endswith(".tmp.npz")) if root.is_dir() else []
        if len(found) > len(paths):
            best, paths = root, found
    if len(paths) < n_frames:
        best = cache_dir(cfg, split).parent / f"{split}_s{t.seed}_n{n_frames}"
        log.info("%d cached %s samples, %d asked for: simulating into %s", len(paths), split, n_frames, best)
        paths = build_cache(best, Rig.from_yaml(DEFAULT_RIG), split, n_frames, t.seed, cfg.model, t.frames_per_drive)
    chosen = _evenly(paths, n_frames)
    log.info("%s features from %d cached samples in %s", split, len(chosen), best)
    desc = f"ood {split}{'' if camera else ' (no camera)'}"
    return collect_samples(detector, chosen, desc=desc, camera=camera), f"cache:{best.name} ({len(chosen)} frames)"


def real_features(detector: FusionDetector, frames: list[Frame], camera: bool, where: str
                  ) -> tuple[FeatureSet, FeatureSet]:
    """Features of clean real ``frames`` (read from ``where``; labels not needed), even frames for fitting and
    odd ones for thresholds; ``camera=True`` keeps only frames that have an image, ``camera=False`` runs every
    frame without its image."""
    frames = [f for f in frames if f.image is not None or not camera]
    if len(frames) < 2:
        raise DataError(f"need at least 2 real frames{' with a camera' if camera else ''}", where)
    fit = collect_frames(detector, frames[0::2], desc="ood real (fit)", camera=camera)
    thresholds = collect_frames(detector, frames[1::2], desc="ood real (thresholds)", camera=camera)
    return fit, thresholds


def fit_model_dir(model_dir: str | Path, train_frames: int = 1000, val_frames: int = 400,
                  min_score: float = DEFAULT_MIN_SCORE, tpr: float = 0.95,
                  detector: FusionDetector | None = None, real: list[str] | None = None,
                  real_repeat: int = 10) -> OodStats:
    """Run the model in ``model_dir`` over train/val data and fit its OOD statistics (not saved).

    ``real`` folders of clean real frames join the in-distribution reference (frame-level models and
    thresholds), each real frame counted ``real_repeat`` times against the many simulated ones."""
    model_dir = Path(model_dir)
    detector = detector or load_detector(model_dir)
    cfg = DetectorConfig.from_yaml(model_dir / CONFIG_FILE)
    train, train_src = split_features(detector, cfg, "train", train_frames)
    val, val_src = split_features(detector, cfg, "val", val_frames)
    no_camera = (split_features(detector, cfg, "train", train_frames, camera=False)[0],
                 split_features(detector, cfg, "val", val_frames, camera=False)[0])
    if real:
        from perception.io import open_frames

        where = ", ".join(real)
        frames = [f for folder in real for f in open_frames(folder)]
        real_fit, real_val = real_features(detector, frames, camera=True, where=where)
        train, val = train.concat(real_fit, real_repeat), val.concat(real_val, real_repeat)
        nc_fit, nc_val = real_features(detector, frames, camera=False, where=where)
        no_camera = (no_camera[0].concat(nc_fit, real_repeat), no_camera[1].concat(nc_val, real_repeat))
        train_src += f" + real {where} ({real_fit.num_frames} frames x {real_repeat})"
        val_src += f" + real ({real_val.num_frames} frames x {real_repeat})"
    backend = detector.model_id.rpartition("@")[2] or "torch"
    meta = {"model": cfg.model.name, "weights_sha256": file_sha256(model_dir / WEIGHTS_FILE),
            "engine": engine_family(backend), "fitted_with_backend": backend,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fitted_on": {"train": train_src, "val": val_src}}
    return fit_stats(train, val, tuple(cfg.model.classes), min_score=min_score, tpr=tpr, meta=meta,
                     lidar_dim=cfg.model.lidar_embedding_dim, no_camera=no_camera)

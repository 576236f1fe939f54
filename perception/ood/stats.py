"""Fitted OOD statistics of one detector: what they hold, and how they are saved beside the model.

``<model_dir>/ood/ood_stats.npz`` holds the arrays (class means and precision of the query features,
mean and precision of the frame embeddings and of the frame descriptors); ``<model_dir>/ood/ood.json``
holds thresholds, fill values and metadata, including the sha256 of the npz and of the detector weights they were
fitted for. :func:`load_stats` checks all of it and raises :class:`ModelError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perception.errors import ConfigError, ModelError
from perception.ood.gaussian import GaussianModel

OOD_DIR = "ood"
STATS_FILE = "ood_stats.npz"
META_FILE = "ood.json"
FORMAT_VERSION = 1
_ARRAYS = ("det_means", "det_precision", "frame_mean", "frame_precision", "desc_mean", "desc_precision", "desc_fill")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class OodStats:
    """Everything :class:`perception.ood.monitor.OodMonitor` needs, fitted on training data."""

    classes: tuple[str, ...]
    detection: GaussianModel  # class means (C, D) + shared precision of the per-detection query features
    frame: GaussianModel  # one mean (1, E) + precision of the frame embeddings
    descriptor: GaussianModel  # one mean (1, P) + precision of the frame descriptors (see OodMonitor)
    descriptor_fill: np.ndarray  # (P,) training mean descriptor: fills the detection part of empty frames
    frame_norm: dict[str, tuple[float, float]]  # mean_<score> -> (mean, std) over validation frames
    thresholds: dict[str, dict[str, float]]  # {"detection": {score: t}, "frame": {score: t}}
    tpr: float = 0.95  # ID acceptance rate the thresholds were set for
    meta: dict[str, Any] = field(default_factory=dict)  # weights_sha256, model name, data, counts, ...

    def threshold(self, level: str, score: str) -> float:
        """Threshold of ``score`` at ``level`` ("detection" or "frame"); ConfigError when not fitted."""
        try:
            return float(self.thresholds[level][score])
        except KeyError:
            known = sorted(self.thresholds.get(level, {}))
            raise ConfigError(f"no {level} threshold for score {score!r}; fitted: {known}",
                              f"ood.json:thresholds.{level}") from None


def stats_dir(model_dir: str | Path) -> Path:
    """``<model_dir>/ood``."""
    return Path(model_dir) / OOD_DIR


def save_stats(stats: OodStats, out_dir: str | Path) -> Path:
    """Write ``ood_stats.npz`` and ``ood.json`` into ``out_dir`` (npz first, json last); returns the json path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    npz = out / STATS_FILE
    tmp = out / (STATS_FILE + ".tmp.npz")
    np.savez(tmp, det_means=stats.detection.means, det_precision=stats.detection.precision,
             frame_mean=stats.frame.means, frame_precision=stats.frame.precision, desc_mean=stats.descriptor.means,
             desc_precision=stats.descriptor.precision, desc_fill=stats.descriptor_fill[None])
    tmp.replace(npz)
    doc = {
        "format_version": FORMAT_VERSION,
        "classes": list(stats.classes),
        "feature_dim": stats.detection.dim,
        "embedding_dim": stats.frame.dim,
        "descriptor_dim": stats.descriptor.dim,
        "shrinkage": {"detection": stats.detection.shrinkage, "frame": stats.frame.shrinkage,
                      "descriptor": stats.descriptor.shrinkage},
        "tpr": stats.tpr,
        "thresholds": stats.thresholds,
        "frame_norm": {k: list(v) for k, v in stats.frame_norm.items()},
        "stats_sha256": file_sha256(npz),
        **stats.meta,
    }
    meta = out / META_FILE
    meta.write_text(json.dumps(doc, indent=2) + "\n")
    return meta


def _finite_number(doc: dict, key: str, where: str) -> float:
    v = doc.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise ModelError(f"expected a finite number, got {v!r}", f"{where}:{key}")
    return float(v)


def _check_model(doc: dict, model_dir: Path, where: str) -> None:
    """The stats must belong to this model: same classes and dims, fitted for these weights."""
    from perception.detector.checkpoint import CONFIG_FILE, WEIGHTS_FILE  # torch: only when a model is checked
    from perception.detector.config import DetectorConfig

    cfg_path = model_dir / CONFIG_FILE
    if cfg_path.is_file():
        cfg = DetectorConfig.from_yaml(cfg_path).model
        if list(cfg.classes) != doc["classes"]:
            raise ModelError(f"stats are for classes {doc['classes']}, the model has {cfg.classes}", f"{where}:classes")
        if cfg.d_model != doc["feature_dim"] or cfg.embedding_dim != doc["embedding_dim"]:
            raise ModelError(f"stats dims (feature {doc['feature_dim']}, embedding {doc['embedding_dim']}) do not "
                             f"match the model (feature {cfg.d_model}, embedding {cfg.embedding_dim})", where)
    weights = model_dir / WEIGHTS_FILE
    fitted_for = doc.get("weights_sha256")
    if weights.is_file() and fitted_for and file_sha256(weights) != fitted_for:
        raise ModelError(f"stats were fitted for other weights (sha256 {fitted_for[:12]}...); "
                         f"refit with `perception fit-ood --model {model_dir}`", where)


def load_stats(ood_dir: str | Path, model_dir: str | Path | None = None) -> OodStats:
    """Read and validate the stats in ``ood_dir``; with ``model_dir``, also check they fit that model.

    Raises :class:`ModelError` (``where`` = the file) when a file is missing, unreadable, corrupt
    (sha256 mismatch, bad shapes, non-finite values) or fitted for other weights / classes / dims.
    """
    ood_dir = Path(ood_dir)
    meta_path, npz_path = ood_dir / META_FILE, ood_dir / STATS_FILE
    for p in (meta_path, npz_path):
        if not p.is_file():
            raise ModelError("OOD statistics missing; fit them with `perception fit-ood --model <model_dir>`", str(p))
    where = str(meta_path)
    try:
        doc = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"unreadable: {exc}", where) from exc
    if not isinstance(doc, dict):
        raise ModelError("expected a JSON object", where)
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"format_version {doc.get('format_version')!r}, expected {FORMAT_VERSION}", where)
    for key, kind in (("classes", list), ("thresholds", dict), ("frame_norm", dict), ("shrinkage", dict),
                      ("feature_dim", int), ("embedding_dim", int), ("descriptor_dim", int), ("stats_sha256", str)):
        if not isinstance(doc.get(key), kind):
            raise ModelError(f"missing or not a {kind.__name__}", f"{where}:{key}")
    if file_sha256(npz_path) != doc["stats_sha256"]:
        raise ModelError("file does not match stats_sha256 in ood.json (corrupt or replaced)", str(npz_path))
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k], dtype=np.float64) for k in _ARRAYS}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(f"unreadable statistics: {exc}", str(npz_path)) from exc
    c, d, e, p = len(doc["classes"]), doc["feature_dim"], doc["embedding_dim"], doc["descriptor_dim"]
    shapes = {"det_means": (c, d), "det_precision": (d, d), "frame_mean": (1, e), "frame_precision": (e, e),
              "desc_mean": (1, p), "desc_precision": (p, p), "desc_fill": (1, p)}
    for k, shape in shapes.items():
        if arrays[k].shape != shape or not np.isfinite(arrays[k]).all():
            raise ModelError(f"{k} has shape {arrays[k].shape} (expected {shape}) or non-finite values",
                             str(npz_path))
    thresholds: dict[str, dict[str, float]] = {}
    for level in ("detection", "frame"):
        table = doc["thresholds"].get(level)
        if not isinstance(table, dict):
            raise ModelError("missing threshold table", f"{where}:thresholds.{level}")
        thresholds[level] = {k: _finite_number(table, k, f"{where}:thresholds.{level}") for k in table}
    frame_norm = {}
    for k, v in doc["frame_norm"].items():
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v) and v[1] > 0):
            raise ModelError(f"expected [mean, std > 0], got {v!r}", f"{where}:frame_norm.{k}")
        frame_norm[k] = (float(v[0]), float(v[1]))
    if model_dir is not None:
        _check_model(doc, Path(model_dir), where)
    shrink = doc["shrinkage"]
    known = {"format_version", "classes", "feature_dim", "embedding_dim", "descriptor_dim", "shrinkage", "tpr",
             "thresholds", "frame_norm", "stats_sha256"}
    return OodStats(
        classes=tuple(doc["classes"]),
        detection=GaussianModel(arrays["det_means"], arrays["det_precision"], float(shrink.get("detection", 0.0))),
        frame=GaussianModel(arrays["frame_mean"], arrays["frame_precision"], float(shrink.get("frame", 0.0))),
        descriptor=GaussianModel(arrays["desc_mean"], arrays["desc_precision"], float(shrink.get("descriptor", 0.0))),
        descriptor_fill=arrays["desc_fill"][0],
        frame_norm=frame_norm, thresholds=thresholds, tpr=_finite_number(doc, "tpr", where),
        meta={k: v for k, v in doc.items() if k not in known},
    )

"""Fitted OOD statistics of one detector: what they hold, and how they are saved beside the model.

``<model_dir>/ood/ood_stats.npz`` holds the arrays (class means and precision of the query features,
mean and precision of the frame embeddings and of the frame descriptors); ``<model_dir>/ood/ood.json``
holds thresholds, fill values and metadata, including the sha256 of the npz and of the detector weights they were
fitted for. :func:`load_stats` checks all of it and raises :class:`ModelError` naming the file.

Statistics are per *engine family*: features from the FP32 engines (PyTorch, ONNX Runtime FP32 on CPU or CUDA)
agree to 1e-4 and share ``<model_dir>/ood``; an approximate engine (INT8, FP16, TensorRT) moves the features
enough to move the frame scores (measured: the INT8 engine's frame embeddings of the bundled drive all sat over
the FP32-fitted threshold while its per-detection scores did not), so it gets its own statistics in
``<model_dir>/ood/<backend>/`` (``perception fit-ood --backend <backend>``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perception.errors import ConfigError, DataError, ModelError
from perception.ood.gaussian import GaussianModel

OOD_DIR = "ood"
STATS_FILE = "ood_stats.npz"
META_FILE = "ood.json"
FORMAT_VERSION = 1
_ARRAYS = ("det_means", "det_precision", "frame_mean", "frame_precision", "desc_mean", "desc_precision", "desc_fill")
_GEOMETRY_ARRAYS = ("geo_means", "geo_precision")
_LIDAR_ARRAYS = ("lidar_frame_mean", "lidar_frame_precision", "lidar_desc_mean", "lidar_desc_precision")


@dataclass(frozen=True)
class GeometryModel:
    """One Gaussian per class of the boxes' point-geometry descriptors, and the training mean / std of the
    ``energy`` and ``geometry`` scores that ``energy_geometry`` standardises with."""

    means: np.ndarray  # (C, K)
    precisions: np.ndarray  # (C, K, K): each class its own covariance (shapes differ: a car is not a cyclist)
    norm: dict[str, tuple[float, float]]  # {"energy": (mean, std), "geometry": (mean, std)}

    @property
    def dim(self) -> int:
        """Descriptor length ``K``."""
        return int(self.means.shape[1])

    def distances(self, x: np.ndarray, classes: np.ndarray, where: str = "geometry") -> np.ndarray:
        """Mahalanobis distance (N,) of descriptors ``x`` (N, K) to the Gaussian of their class (N,)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim or not np.isfinite(x).all():
            raise DataError(f"expected (N, {self.dim}) finite descriptors, got shape {x.shape}", where)
        diff = x - self.means[classes]
        d2 = np.einsum("nk,nkl,nl->n", diff, self.precisions[classes], diff)
        return np.sqrt(np.clip(d2, 0.0, None))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class LidarFrameModel:
    """Frame models for frames without a camera: the frame embedding's LiDAR part (its first ``dim`` values,
    pooled BEV features, which the camera does not touch) and the frame descriptor built on that part.
    Their thresholds are ``thresholds["frame_lidar"]``."""

    dim: int  # length of the embedding's LiDAR part
    frame: GaussianModel  # (1, dim) mean + precision
    descriptor: GaussianModel  # (1, dim + feature_dim + 3) mean + precision


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
    geometry: GeometryModel | None = None  # point-geometry Gaussians (absent: no geometry scores)
    lidar: LidarFrameModel | None = None  # frame models of the embedding's LiDAR part (frames without camera)

    def thresholds_for(self, camera: bool = True) -> dict[str, dict[str, float]]:
        """The thresholds that apply to a frame; without its camera (and with LiDAR-part models), the frame
        table takes the LiDAR part's ``frame_lidar`` thresholds for the scores they cover."""
        if camera or self.lidar is None:
            return self.thresholds
        return {**self.thresholds, "frame": {**self.thresholds["frame"], **self.thresholds["frame_lidar"]}}

    def threshold(self, level: str, score: str) -> float:
        """Threshold of ``score`` at ``level`` ("detection" or "frame"); ConfigError when not fitted."""
        try:
            return float(self.thresholds[level][score])
        except KeyError:
            known = sorted(self.thresholds.get(level, {}))
            raise ConfigError(f"no {level} threshold for score {score!r}; fitted: {known}",
                              f"ood.json:thresholds.{level}") from None


#: Engine family of the FP32 backends, whose features agree with PyTorch's (they share ``<model_dir>/ood``).
REFERENCE_ENGINE = "reference"
REFERENCE_BACKENDS = ("torch", "onnxruntime", "onnxruntime-cuda")


def engine_family(backend: str | None) -> str:
    """:data:`REFERENCE_ENGINE` for the FP32 backends (and None / ""), else the backend's own name."""
    if not backend or backend in REFERENCE_BACKENDS:
        return REFERENCE_ENGINE
    if backend == "auto" or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", backend):
        raise ConfigError(f"expected a resolved backend name, got {backend!r}", "backend")
    return backend


def stats_dir(model_dir: str | Path, backend: str | None = None) -> Path:
    """``<model_dir>/ood`` for the FP32 backends, ``<model_dir>/ood/<backend>`` for an approximate one."""
    family = engine_family(backend)
    root = Path(model_dir) / OOD_DIR
    return root if family == REFERENCE_ENGINE else root / family


def save_stats(stats: OodStats, out_dir: str | Path) -> Path:
    """Write ``ood_stats.npz`` and ``ood.json`` into ``out_dir`` (npz first, json last); returns the json path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    npz = out / STATS_FILE
    tmp = out / (STATS_FILE + ".tmp.npz")
    np.savez(tmp, det_means=stats.detection.means, det_precision=stats.detection.precision,
             frame_mean=stats.frame.means, frame_precision=stats.frame.precision, desc_mean=stats.descriptor.means,
             desc_precision=stats.descriptor.precision, desc_fill=stats.descriptor_fill[None],
             **({"geo_means": stats.geometry.means, "geo_precision": stats.geometry.precisions}
                if stats.geometry is not None else {}),
             **({"lidar_frame_mean": stats.lidar.frame.means, "lidar_frame_precision": stats.lidar.frame.precision,
                 "lidar_desc_mean": stats.lidar.descriptor.means,
                 "lidar_desc_precision": stats.lidar.descriptor.precision} if stats.lidar is not None else {}))
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
        **({"geometry_dim": stats.geometry.dim, "geometry_norm": {k: list(v) for k, v in stats.geometry.norm.items()}}
           if stats.geometry is not None else {}),
        **({"lidar_embedding_dim": stats.lidar.dim} if stats.lidar is not None else {}),
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
    geo_dim = doc.get("geometry_dim")
    if geo_dim is not None and (not isinstance(geo_dim, int) or isinstance(geo_dim, bool) or geo_dim < 1):
        raise ModelError(f"expected a positive integer, got {geo_dim!r}", f"{where}:geometry_dim")
    lidar_dim = doc.get("lidar_embedding_dim")
    if lidar_dim is not None and (not isinstance(lidar_dim, int) or isinstance(lidar_dim, bool)
                                  or not 0 < lidar_dim < doc["embedding_dim"]):
        raise ModelError(f"expected an integer in (0, embedding_dim), got {lidar_dim!r}",
                         f"{where}:lidar_embedding_dim")
    names = _ARRAYS + (_GEOMETRY_ARRAYS if geo_dim else ()) + (_LIDAR_ARRAYS if lidar_dim else ())
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k], dtype=np.float64) for k in names}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(f"unreadable statistics: {exc}", str(npz_path)) from exc
    c, d, e, p = len(doc["classes"]), doc["feature_dim"], doc["embedding_dim"], doc["descriptor_dim"]
    shapes = {"det_means": (c, d), "det_precision": (d, d), "frame_mean": (1, e), "frame_precision": (e, e),
              "desc_mean": (1, p), "desc_precision": (p, p), "desc_fill": (1, p)}
    if geo_dim:
        shapes.update(geo_means=(c, geo_dim), geo_precision=(c, geo_dim, geo_dim))
    if lidar_dim:
        pl = p - e + lidar_dim
        shapes.update(lidar_frame_mean=(1, lidar_dim), lidar_frame_precision=(lidar_dim, lidar_dim),
                      lidar_desc_mean=(1, pl), lidar_desc_precision=(pl, pl))
    for k, shape in shapes.items():
        if arrays[k].shape != shape or not np.isfinite(arrays[k]).all():
            raise ModelError(f"{k} has shape {arrays[k].shape} (expected {shape}) or non-finite values",
                             str(npz_path))
    thresholds: dict[str, dict[str, float]] = {}
    for level in ("detection", "frame") + (("frame_lidar",) if lidar_dim else ()):
        table = doc["thresholds"].get(level)
        if not isinstance(table, dict):
            raise ModelError("missing threshold table", f"{where}:thresholds.{level}")
        thresholds[level] = {k: _finite_number(table, k, f"{where}:thresholds.{level}") for k in table}
    frame_norm = {}
    for k, v in doc["frame_norm"].items():
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v) and v[1] > 0):
            raise ModelError(f"expected [mean, std > 0], got {v!r}", f"{where}:frame_norm.{k}")
        frame_norm[k] = (float(v[0]), float(v[1]))
    geometry = None
    if geo_dim:
        norm = doc.get("geometry_norm")
        if not (isinstance(norm, dict) and all(
                isinstance(norm.get(k), list) and len(norm[k]) == 2
                and all(isinstance(x, (int, float)) and math.isfinite(x) for x in norm[k]) and norm[k][1] > 0
                for k in ("energy", "geometry"))):
            raise ModelError(f"expected energy and geometry [mean, std > 0], got {norm!r}", f"{where}:geometry_norm")
        geometry = GeometryModel(arrays["geo_means"], arrays["geo_precision"],
                                 {k: (float(norm[k][0]), float(norm[k][1])) for k in ("energy", "geometry")})
    lidar = None
    if lidar_dim:
        lidar = LidarFrameModel(lidar_dim, GaussianModel(arrays["lidar_frame_mean"], arrays["lidar_frame_precision"]),
                                GaussianModel(arrays["lidar_desc_mean"], arrays["lidar_desc_precision"]))
    if model_dir is not None:
        _check_model(doc, Path(model_dir), where)
    shrink = doc["shrinkage"]
    known = {"format_version", "classes", "feature_dim", "embedding_dim", "descriptor_dim", "shrinkage", "tpr",
             "thresholds", "frame_norm", "stats_sha256", "geometry_dim", "geometry_norm", "lidar_embedding_dim"}
    return OodStats(
        classes=tuple(doc["classes"]),
        detection=GaussianModel(arrays["det_means"], arrays["det_precision"], float(shrink.get("detection", 0.0))),
        frame=GaussianModel(arrays["frame_mean"], arrays["frame_precision"], float(shrink.get("frame", 0.0))),
        descriptor=GaussianModel(arrays["desc_mean"], arrays["desc_precision"], float(shrink.get("descriptor", 0.0))),
        descriptor_fill=arrays["desc_fill"][0],
        frame_norm=frame_norm, thresholds=thresholds, tpr=_finite_number(doc, "tpr", where),
        meta={k: v for k, v in doc.items() if k not in known}, geometry=geometry, lidar=lidar,
    )

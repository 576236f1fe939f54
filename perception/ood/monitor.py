"""Score detections and frames against fitted statistics: ``OodMonitor.load(model_dir).score(...)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perception.detector.result import DetectionResult
from perception.errors import ConfigError, DataError
from perception.ood.scores import (
    DETECTION_SCORES,
    GEOMETRY_SCORES,
    LOGIT_SCORES,
    energy_score,
    mahalanobis_score,
    mahavar_score,
)
from perception.ood.stats import OodStats, load_stats, stats_dir

#: Frame-level scores: the frame descriptor's distance, the frame embedding's, and per-detection means.
FRAME_SCORES: tuple[str, ...] = ("frame", "embedding", *(f"mean_{s}" for s in DETECTION_SCORES))
#: Frame scores that change when the camera is unused (scored on the embedding's LiDAR part then).
LIDAR_FRAME_SCORES: tuple[str, ...] = ("frame", "embedding")
#: Per-detection scores averaged into the frame descriptor (those a features-only message allows).
DESCRIPTOR_SCORES: tuple[str, ...] = ("mahalanobis", "mahavar")
#: Smallest detector score (``Detection.score``, the sigmoid of the top class logit) a detection needs to be
#: flagged. Lower-scoring detections (published from 0.05, for AP) are scored but never flagged: on 20 clean
#: frames 92-100 % of those below 0.3 were over the ``energy_geometry`` threshold, against 1 % of those >= 0.5.
FLAG_MIN_SCORE = 0.3


def detector_scores_from_logits(logits: np.ndarray) -> np.ndarray:
    """(N,) the detector's score of each detection from its class logits (N, C): the sigmoid of the top logit,
    as :func:`perception.detector.postprocess.decode` computes ``Detection.score``."""
    lg = np.asarray(logits, dtype=np.float64)
    if lg.size == 0:
        return np.zeros(len(lg))
    return 0.5 * (1.0 + np.tanh(0.5 * lg.max(axis=1)))  # = 1 / (1 + exp(-x)), without overflow


def descriptor_dim(feature_dim: int, embedding_dim: int) -> int:
    """Length of a frame descriptor (see :meth:`OodMonitor.frame_descriptor`)."""
    return embedding_dim + feature_dim + len(DESCRIPTOR_SCORES) + 1


@dataclass
class OodResult:
    """Scores of one frame: per-detection arrays (N,) and per-frame values, plus the thresholds."""

    detection: dict[str, np.ndarray]
    frame: dict[str, float]
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    lidar_only: bool = False  # camera unused: frame scores (and ``thresholds["frame"]``) are the LiDAR part's
    detector_scores: np.ndarray | None = None  # (N,) the detector's score of each detection; None: unknown
    flag_min_score: float = 0.0  # detections whose detector score is below it are never flagged

    def flaggable(self) -> np.ndarray:
        """(N,) bool: detections that may be flagged, their detector score >= ``flag_min_score`` (all of them
        when the detector's scores are unknown)."""
        n = len(next(iter(self.detection.values()), ()))
        if self.detector_scores is None:
            return np.ones(n, dtype=bool)
        return np.asarray(self.detector_scores) >= self.flag_min_score

    def detection_flags(self, score: str) -> np.ndarray:
        """(N,) bool: detection ``score`` above its threshold, for the :meth:`flaggable` detections."""
        return (self.detection[score] > self.thresholds["detection"][score]) & self.flaggable()

    def frame_flag(self, score: str) -> bool:
        """True when frame ``score`` is above its threshold."""
        return bool(self.frame[score] > self.thresholds["frame"][score])


class OodMonitor:
    """Out-of-distribution scores of detector outputs, from :class:`OodStats` fitted on training data.

    Frame scores: ``embedding`` is the Mahalanobis distance of the frame embedding (pooled BEV + image
    features) to the training frames; ``mean_<score>`` averages a detection score over the frame's detections; ``frame``
    is the Mahalanobis distance of the frame *descriptor* — embedding, mean query feature, mean
    Mahalanobis and MahaVar scores of the detections and ``log(1 + #detections)`` — to the training
    frames' descriptors. Being a distance, ``frame`` rises when any part moves either way (heavy rain,
    for one, leaves fewer and *more* typical detections). A frame without detections takes the training
    mean for the detection part of its descriptor (its count, 0, still counts), and the validation mean
    for its ``mean_<score>`` values.

    A frame the network saw without its camera (``camera=False``) pools a blank image into the image half of its
    embedding, which says nothing about the scene: when the statistics hold LiDAR-part models
    (:class:`~perception.ood.stats.LidarFrameModel`), ``embedding`` and ``frame`` are scored on the embedding's
    LiDAR part against them and flagged at their own thresholds; night or glare cannot be seen then.

    Detections whose detector score is below ``flag_min_score`` (default :data:`FLAG_MIN_SCORE`) get their
    scores all the same but are never flagged (:meth:`OodResult.detection_flags`); scores, and so AUROC
    evaluation, do not depend on it.
    """

    def __init__(self, stats: OodStats, flag_min_score: float = FLAG_MIN_SCORE) -> None:
        if not 0.0 <= flag_min_score <= 1.0:
            raise ConfigError(f"{flag_min_score} is outside [0, 1]", "flag_min_score")
        self.stats = stats
        self.flag_min_score = float(flag_min_score)

    @classmethod
    def load(cls, model_dir: str | Path, backend: str | None = None,
             flag_min_score: float = FLAG_MIN_SCORE) -> OodMonitor:
        """Load the statistics of ``backend``'s engine family (:func:`~perception.ood.stats.stats_dir`; default:
        the FP32 reference) and check they belong to the model; raises ModelError."""
        return cls(load_stats(stats_dir(model_dir, backend), model_dir), flag_min_score)

    @property
    def feature_dim(self) -> int:
        """Dimension of the per-detection query features."""
        return self.stats.detection.dim

    @property
    def embedding_dim(self) -> int:
        """Dimension of the frame embedding."""
        return self.stats.frame.dim

    def detection_scores(self, features: np.ndarray, logits: np.ndarray | None = None,
                         geometry: np.ndarray | None = None, where: str = "features") -> dict[str, np.ndarray]:
        """Per-detection scores (N,) of features (N, D); logits (N, C) add ``energy``, logits and point-geometry
        descriptors (N, K) add ``geometry`` and ``energy_geometry`` (when the statistics hold a geometry model)."""
        feats = np.asarray(features, dtype=np.float64)
        geo_model = self.stats.geometry
        with_geometry = geometry is not None and logits is not None and geo_model is not None
        if feats.size == 0:
            return {s: np.zeros(0) for s in DETECTION_SCORES
                    if (s not in LOGIT_SCORES or logits is not None) and (s not in GEOMETRY_SCORES or with_geometry)}
        if not np.isfinite(feats).all():
            raise DataError("non-finite feature values", where)
        dist = self.stats.detection.distances(feats, where)
        out = {"mahalanobis": mahalanobis_score(dist), "mahavar": mahavar_score(dist)}
        if logits is not None:
            lg = np.asarray(logits, dtype=np.float64)
            if lg.ndim != 2 or len(lg) != len(feats):
                raise DataError(f"expected ({len(feats)}, C) logits, got shape {lg.shape}", "logits")
            out["energy"] = energy_score(lg)
            if with_geometry:
                geo = np.asarray(geometry, dtype=np.float64)
                if geo.ndim != 2 or len(geo) != len(feats):
                    raise DataError(f"expected ({len(feats)}, K) geometry descriptors, got shape {geo.shape}",
                                    "geometry")
                out["geometry"] = geo_model.distances(geo, lg.argmax(axis=1), "geometry")
                (em, es), (gm, gs) = geo_model.norm["energy"], geo_model.norm["geometry"]
                out["energy_geometry"] = (out["energy"] - em) / es + (out["geometry"] - gm) / gs
        return out

    def frame_descriptor(self, embedding: np.ndarray, features: np.ndarray,
                         detection_scores: dict[str, np.ndarray]) -> np.ndarray:
        """(P,) descriptor of a frame: embedding (E,), mean feature of its detections (N, D), mean
        :data:`DESCRIPTOR_SCORES`, log(1 + N)."""
        n = len(features)
        e, d = self.embedding_dim, self.feature_dim
        if n:
            det_part = np.concatenate([np.mean(features, axis=0),
                                       [float(np.mean(detection_scores[k])) for k in DESCRIPTOR_SCORES]])
        else:
            det_part = self.stats.descriptor_fill[e:e + d + len(DESCRIPTOR_SCORES)]
        return np.concatenate([np.asarray(embedding, np.float64).ravel(), det_part, [np.log1p(n)]])

    def frame_scores(self, embedding: np.ndarray | None, features: np.ndarray,
                     detection_scores: dict[str, np.ndarray], where: str = "frame_embedding",
                     camera: bool = True) -> dict[str, float]:
        """Frame scores from the frame embedding (E,) and this frame's detection features (N, D) and scores;
        ``camera=False``: on the embedding's LiDAR part, when the statistics have models of it."""
        out: dict[str, float] = {}
        for name, values in detection_scores.items():
            key = f"mean_{name}"
            out[key] = float(np.mean(values)) if len(values) else self.stats.frame_norm[key][0]
        if embedding is not None and np.size(embedding):
            emb = np.asarray(embedding, dtype=np.float64).ravel()
            if emb.size != self.embedding_dim or not np.isfinite(emb).all():
                raise DataError(f"expected {self.embedding_dim} finite values, got {emb.size}", where)
            frame_model, descriptor_model = self.stats.frame, self.stats.descriptor
            lidar = None if camera else self.stats.lidar
            if lidar is not None:
                emb, frame_model, descriptor_model = emb[:lidar.dim], lidar.frame, lidar.descriptor
            out["embedding"] = float(frame_model.distances(emb[None], where)[0, 0])
            feats = np.asarray(features, dtype=np.float64).reshape(-1, self.feature_dim)
            desc = self.frame_descriptor(emb, feats, detection_scores)
            out["frame"] = float(descriptor_model.distances(desc[None], where)[0, 0])
        return out

    def score(self, features: np.ndarray, embedding: np.ndarray | None, logits: np.ndarray | None = None,
              where: str = "features", geometry: np.ndarray | None = None, camera: bool = True,
              detector_scores: np.ndarray | None = None) -> OodResult:
        """All scores of one frame's detections (features (N, D); logits (N, C) and geometry descriptors (N, K)
        optional) and embedding; ``camera=False`` when the network ran LiDAR-only. ``detector_scores`` (N,) are
        the detector's scores, for the ``flag_min_score`` floor (default: from the logits; neither: no floor)."""
        det = self.detection_scores(features, logits, geometry, where)
        if detector_scores is None and logits is not None:
            detector_scores = detector_scores_from_logits(logits)
        if detector_scores is not None:
            detector_scores = np.asarray(detector_scores, dtype=np.float64).ravel()
            n = len(det["mahalanobis"])
            if len(detector_scores) != n:
                raise DataError(f"{len(detector_scores)} detector scores for {n} detections", "detector_scores")
        return OodResult(det, self.frame_scores(embedding, features, det, camera=camera),
                         self.stats.thresholds_for(camera), lidar_only=not camera and self.stats.lidar is not None,
                         detector_scores=detector_scores, flag_min_score=self.flag_min_score)

    def score_result(self, result: DetectionResult, lidar_part: bool = False) -> OodResult:
        """Scores of a :class:`DetectionResult` (needs ``feature``/``logits`` on every detection); ``lidar_part``:
        frame scores on the embedding's LiDAR part even when the camera was used (is the LiDAR input unusual?)."""
        dets = result.detections
        if any(d.feature is None or d.logits is None for d in dets):
            raise DataError("every detection needs its query feature and logits", "DetectionResult.detections")
        feats = np.stack([d.feature for d in dets]) if dets else np.zeros((0, self.feature_dim))
        logits = np.stack([d.logits for d in dets]) if dets else np.zeros((0, len(self.stats.classes)))
        geometry = None
        if all(d.geometry is not None for d in dets) and self.stats.geometry is not None:
            geometry = np.stack([d.geometry for d in dets]) if dets else np.zeros((0, self.stats.geometry.dim))
        camera = result.camera_used and not lidar_part
        return self.score(feats, result.frame_embedding, logits, geometry=geometry, camera=camera,
                          detector_scores=np.array([d.score for d in dets], dtype=np.float64))

    def annotate(self, result: DetectionResult, score: str = "mahalanobis") -> OodResult:
        """Score a result and write detection ``score`` into each ``Detection.ood_score``."""
        if score not in DETECTION_SCORES:
            raise ConfigError(f"unknown detection score {score!r}; expected one of {DETECTION_SCORES}", "score")
        res = self.score_result(result)
        for d, v in zip(result.detections, res.detection[score]):
            d.ood_score = float(v)
        return res


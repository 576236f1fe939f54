"""Run the detector over frames (or cached training samples) and keep what OOD scoring needs.

Each detection is matched to at most one ground-truth box (greedy in descending detector score, nearest
unmatched box whose BEV centre lies within ``max(min_radius, half the box's BEV diagonal)``), so a
detection can be labelled as sitting on a known-class object, an unknown (OOD) object, or nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from perception.detector.api import FusionDetector, add_geometry, engine_inputs
from perception.detector.data import load_sample
from perception.detector.inputs import FrameInputs
from perception.detector.postprocess import PostProcessConfig, decode
from perception.detector.voxelize import voxelize
from perception.errors import DataError
from perception.eval.iou import bev_distance
from perception.frame import Box3D, Detection, Frame, boxes_to_array
from perception.ood.geometry import GEOMETRY_DIM

log = logging.getLogger(__name__)

#: Smallest matching radius (m) between a detection centre and a ground-truth centre.
MIN_MATCH_RADIUS = 1.0


@dataclass
class FeatureSet:
    """Detector evidence of a set of frames: one row per detection, one row per frame."""

    features: np.ndarray  # (N, D) float32 query embeddings
    logits: np.ndarray  # (N, C) float32 raw class logits
    scores: np.ndarray  # (N,) raw detector scores
    frame_index: np.ndarray  # (N,) int: row of the frame in ``embeddings`` / ``frame_ids``
    matched: np.ndarray  # (N,) str: label of the matched ground-truth box, "" when none
    embeddings: np.ndarray  # (F, E) frame embeddings
    frame_ids: list[str] = field(default_factory=list)
    geometry: np.ndarray | None = None  # (N, K) point-geometry descriptors of the boxes (None: not computed)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def num_frames(self) -> int:
        """Number of frames."""
        return len(self.embeddings)

    def detections(self, mask: np.ndarray) -> FeatureSet:
        """The same frames with only the detections where ``mask`` (N,) is true."""
        m = np.asarray(mask, dtype=bool)
        return FeatureSet(self.features[m], self.logits[m], self.scores[m], self.frame_index[m], self.matched[m],
                          self.embeddings, list(self.frame_ids), None if self.geometry is None else self.geometry[m])

    def concat(self, other: FeatureSet, repeat: int = 1) -> FeatureSet:
        """This set followed by ``repeat`` copies of ``other`` (repeating a small set weights it in the fits)."""
        sets = [self] + [other] * repeat
        offsets = np.cumsum([0] + [s.num_frames for s in sets[:-1]])
        geometry = None
        if all(s.geometry is not None for s in sets):
            geometry = np.concatenate([s.geometry for s in sets])  # type: ignore[misc]
        return FeatureSet(np.concatenate([s.features for s in sets]), np.concatenate([s.logits for s in sets]),
                          np.concatenate([s.scores for s in sets]),
                          np.concatenate([s.frame_index + o for s, o in zip(sets, offsets)]),
                          np.concatenate([s.matched for s in sets]), np.concatenate([s.embeddings for s in sets]),
                          [i for s in sets for i in s.frame_ids], geometry)

    def save(self, path: Path) -> None:
        """Write as an .npz (atomic rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, features=self.features, logits=self.logits, scores=self.scores, frame_index=self.frame_index,
                 matched=self.matched.astype(str), embeddings=self.embeddings, frame_ids=np.array(self.frame_ids),
                 **({} if self.geometry is None else {"geometry": self.geometry}))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FeatureSet:
        """Read a set written by :meth:`save`; DataError naming the file when it is unreadable."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["features"], z["logits"], z["scores"], z["frame_index"], z["matched"].astype(object),
                           z["embeddings"], [str(s) for s in z["frame_ids"]],
                           z["geometry"] if "geometry" in z.files else None)
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"unreadable feature set: {exc}", str(path)) from exc


def match_detections(detections: list[Detection], gt: list[Box3D], min_radius: float = MIN_MATCH_RADIUS) -> list[str]:
    """Label of the ground-truth box each detection is matched to ("" when none); one-to-one, greedy."""
    out = [""] * len(detections)
    if not detections or not gt:
        return out
    det_arr = boxes_to_array([d.box for d in detections])
    gt_arr = boxes_to_array(gt)
    dist = bev_distance(det_arr, gt_arr)  # (N, G)
    radius = np.maximum(min_radius, 0.5 * np.hypot(gt_arr[:, 3], gt_arr[:, 4]))
    dist = np.where(dist <= radius[None, :], dist, np.inf)
    taken = np.zeros(len(gt), dtype=bool)
    for i in np.argsort([-d.score for d in detections], kind="stable"):
        row = np.where(taken, np.inf, dist[i])
        j = int(np.argmin(row))
        if np.isfinite(row[j]):
            taken[j] = True
            out[i] = gt[j].label
    return out


class _Collector:
    """Accumulates detections and embeddings frame by frame."""

    def __init__(self) -> None:
        self.feats: list[np.ndarray] = []
        self.logits: list[np.ndarray] = []
        self.scores: list[float] = []
        self.frame_index: list[int] = []
        self.matched: list[str] = []
        self.embeddings: list[np.ndarray] = []
        self.frame_ids: list[str] = []
        self.geometry: list[np.ndarray | None] = []

    def add(self, frame_id: str, detections: list[Detection], embedding: np.ndarray | None, gt: list[Box3D]) -> None:
        if embedding is None:  # no LiDAR input at all: nothing to score
            log.warning("frame %s has no frame embedding (empty LiDAR); skipped", frame_id)
            return
        if any(d.feature is None or d.logits is None for d in detections):
            raise DataError("detections carry no query features / logits; this model cannot be OOD-scored", frame_id)
        k = len(self.embeddings)
        for d, label in zip(detections, match_detections(detections, gt)):
            self.feats.append(np.asarray(d.feature, np.float32))
            self.logits.append(np.asarray(d.logits, np.float32))
            self.scores.append(float(d.score))
            self.frame_index.append(k)
            self.matched.append(label)
            self.geometry.append(d.geometry)
        self.embeddings.append(np.asarray(embedding, np.float32).ravel())
        self.frame_ids.append(frame_id)

    def result(self, feature_dim: int, num_classes: int) -> FeatureSet:
        emb = np.stack(self.embeddings) if self.embeddings else np.zeros((0, 0), np.float32)
        geometry = None
        if all(g is not None for g in self.geometry):
            geometry = (np.stack(self.geometry).astype(np.float32) if self.geometry
                        else np.zeros((0, GEOMETRY_DIM), np.float32))
        return FeatureSet(
            features=np.stack(self.feats) if self.feats else np.zeros((0, feature_dim), np.float32),
            logits=np.stack(self.logits) if self.logits else np.zeros((0, num_classes), np.float32),
            scores=np.asarray(self.scores, np.float64), frame_index=np.asarray(self.frame_index, np.int64),
            matched=np.asarray(self.matched, dtype=object), embeddings=emb, frame_ids=self.frame_ids,
            geometry=geometry)


def load_detector(model_dir: str | Path, num_threads: int | None = None, backend: str = "torch") -> FusionDetector:
    """The model's detector as OOD work runs it: the same thresholds as at run time, attention not kept."""
    return FusionDetector.load(model_dir, backend=backend, num_threads=num_threads,
                               postprocess=PostProcessConfig(keep_attention=False))


def collect_frames(detector: FusionDetector, frames: Iterable[Frame], total: int | None = None,
                   desc: str = "ood features", camera: bool = True) -> FeatureSet:
    """Run ``detector`` over ``frames`` and collect features, logits, embeddings and GT matches;
    ``camera=False`` drops each frame's image first (what a camera failure gives)."""
    acc = _Collector()
    for frame in tqdm(frames, total=total, desc=desc, unit="frame"):
        result = detector(frame if camera else replace(frame, image=None))
        acc.add(frame.frame_id, result.detections, result.frame_embedding, frame.boxes)
    return acc.result(detector.cfg.d_model, len(detector.cfg.classes))


def collect_samples(detector: FusionDetector, paths: list[Path], desc: str = "ood features",
                    camera: bool = True) -> FeatureSet:
    """The same from cached training samples (:mod:`perception.detector.data`), which skip the simulator.

    A sample holds the cropped LiDAR points and the already-resized image, so it is run through the
    engine directly (the same pre- and post-processing as :meth:`FusionDetector.__call__`).
    """
    cfg = detector.cfg
    acc = _Collector()
    for path in tqdm(paths, desc=desc, unit="frame"):
        s = load_sample(path)
        image = s.image if camera else np.zeros_like(s.image)  # as prepare_frame gives a frame without image
        inputs = FrameInputs(voxelize(s.points, cfg), image, s.lidar2img, s.has_camera and camera)
        gt = [Box3D(cfg.classes[int(c)], b[:3], b[3:6], float(b[6])) for b, c in zip(s.boxes, s.labels)]
        if len(inputs.pillars.coords) == 0:
            acc.add(path.stem, [], None, gt)
            continue
        raw = detector.engine.run(engine_inputs(inputs))
        dets = decode(raw, cfg, detector.calibration, detector.postprocess)
        add_geometry(dets, s.points)
        acc.add(path.stem, dets, raw["frame_embedding"][0], gt)
    return acc.result(cfg.d_model, len(cfg.classes))

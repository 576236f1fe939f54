"""Post-processing: raw head outputs (numpy, from any engine) → Detections with probability,
covariance, attention and modality share; circle NMS; a cap on detections."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perception.detector.config import ModelConfig
from perception.frame import Box3D, Detection
from perception.trust.calibration import Calibration

#: Centre distance (m) below which a lower-scoring detection of the same class is suppressed.
NMS_RADIUS = {"Car": 2.0, "Pedestrian": 0.5, "Cyclist": 1.0}

#: Output names of the network, in export order (engines return a dict with these keys).
OUTPUT_NAMES = ("heatmap", "query_ref", "query_class", "logits", "boxes", "logvar", "attn_bev", "attn_bev_index",
                "attn_image", "camera_share", "query_features", "frame_embedding")


@dataclass
class PostProcessConfig:
    """Thresholds of post-processing."""

    score_threshold: float = 0.05  # on the raw score; keep low for AP, raise for display
    max_detections: int = 50
    nms_radius: dict[str, float] = field(default_factory=lambda: dict(NMS_RADIUS))
    keep_attention: bool = True
    refine_boxes: bool = True  # fit Car boxes to their points (perception.detector.refine)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def circle_nms(centres: np.ndarray, scores: np.ndarray, radius: float) -> np.ndarray:
    """Indices kept by greedy distance-based NMS, highest score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if all(np.hypot(*(centres[i] - centres[j])) >= radius for j in keep):
            keep.append(int(i))
    return np.array(keep, dtype=np.int64)


def decode(raw: dict[str, np.ndarray], cfg: ModelConfig, calibration: Calibration | None = None,
           pp: PostProcessConfig | None = None, batch_index: int = 0) -> list[Detection]:
    """Turn the last decoder layer's outputs of one sample into Detections."""
    pp = pp or PostProcessConfig()
    cal = calibration or Calibration()
    b = batch_index
    logits = raw["logits"][-1, b]  # (Q, C)
    boxes = raw["boxes"][-1, b]  # (Q, 8)
    logvar = raw["logvar"][-1, b]  # (Q, 7)
    cls = logits.argmax(axis=1)
    best_logit = logits[np.arange(len(cls)), cls]
    scores = _sigmoid(best_logit)
    cand = np.flatnonzero(scores >= pp.score_threshold)
    keep_all: list[int] = []
    for c in np.unique(cls[cand]):
        idx = cand[cls[cand] == c]
        kept = circle_nms(boxes[idx, :2], scores[idx], pp.nms_radius.get(cfg.classes[c], 1.0))
        keep_all.extend(idx[kept].tolist())
    keep_all.sort(key=lambda i: -scores[i])
    keep_all = keep_all[: pp.max_detections]
    dets = []
    for q in keep_all:
        label = cfg.classes[int(cls[q])]
        size = np.exp(boxes[q, 3:6])
        yaw = float(np.arctan2(boxes[q, 6], boxes[q, 7]))
        var = np.exp(logvar[q].astype(np.float64))
        var[3:6] *= size ** 2  # log-size variance → size variance (delta method)
        var = cal.scale_variance(var)
        share_cam = float(raw["camera_share"][b, q])
        attention: dict[str, np.ndarray] = {}
        if pp.keep_attention:
            attention = {"bev": raw["attn_bev"][:, b, :, q], "bev_index": raw["attn_bev_index"][:, b, q],
                         "image": raw["attn_image"][b, :, q]}
        dets.append(Detection(
            box=Box3D(label, boxes[q, 0:3], size, yaw),
            score=float(scores[q]),
            probability=float(cal.probability(best_logit[q], label)),
            covariance=np.diag(var),
            modality_share={"lidar": 1.0 - share_cam, "camera": share_cam},
            attention=attention,
            feature=raw["query_features"][b, q].astype(np.float32),
            logits=logits[q].astype(np.float32),
        ))
    return dets


def attention_maps(detections: list[Detection], cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Attention mass of all detections scattered onto the BEV grid (Hb, Wb) and image feature grid (h, w)."""
    hb, wb = cfg.bev_shape
    hi, wi = cfg.image_feature_shape
    bev = np.zeros(hb * wb, np.float64)
    img = np.zeros(hi * wi, np.float64)
    for d in detections:
        if "bev" not in d.attention:
            continue
        w = d.probability
        np.add.at(bev, d.attention["bev_index"].reshape(-1),
                  w * d.attention["bev"].mean(axis=1).reshape(-1))  # mean over heads, sum over layers
        img += w * d.attention["image"].mean(axis=0)
    return bev.reshape(hb, wb), img.reshape(hi, wi)

"""Training targets and losses: Gaussian heatmaps, Hungarian matching, focal + L1 + Gaussian NLL."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from perception.detector.config import ModelConfig
from perception.detector.model import NetOutput
from perception.errors import ConfigError

#: Largest centre distance (m) at which a query may be matched to a ground-truth box, per class.
MATCH_GATE = {"Car": 2.5, "Pedestrian": 1.0, "Cyclist": 1.5}
#: Weights of the L1 terms on x, y, z, log l, log w, log h (yaw: :func:`heading_loss`).
REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
#: The yaw losses :func:`detection_loss` knows.
YAW_LOSSES = ("flip_invariant", "sincos_l1")
#: Weight of the flip-invariant orientation term of :func:`heading_loss`.
ORIENTATION_WEIGHT = 1.0


def gaussian_radius(length: float, width: float, min_overlap: float = 0.1) -> float:
    """CornerNet/CenterPoint radius (in cells) of a heatmap peak for a box of the given size in cells."""
    a1, b1 = 1.0, length + width
    c1 = width * length * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (length + width)
    c2 = (1 - min_overlap) * width * length
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (length + width)
    c3 = (min_overlap - 1) * width * length
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def heatmap_target(boxes: np.ndarray, labels: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """(C, Hb, Wb) Gaussian heatmap with a 1.0 at each box centre's cell."""
    hb, wb = cfg.bev_shape
    r = cfg.point_range
    cell = (r[3] - r[0]) / wb
    target = np.zeros((len(cfg.classes), hb, wb), np.float32)
    for box, label in zip(boxes, labels):
        cx, cy = (box[0] - r[0]) / cell, (box[1] - r[1]) / cell
        ix, iy = int(cx), int(cy)
        if not (0 <= ix < wb and 0 <= iy < hb):
            continue
        radius = max(2, int(gaussian_radius(box[3] / cell, box[4] / cell)))
        sigma = (2 * radius + 1) / 6.0
        y0, y1, x0, x1 = max(0, iy - radius), min(hb, iy + radius + 1), max(0, ix - radius), min(wb, ix + radius + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        g = np.exp(-((yy - iy) ** 2 + (xx - ix) ** 2) / (2 * sigma ** 2))
        target[label, y0:y1, x0:x1] = np.maximum(target[label, y0:y1, x0:x1], g)
    return target


def heatmap_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of peaks."""
    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1.0).float()
    neg_w = (1 - target) ** 4
    pos_loss = -(torch.log(pred) * (1 - pred) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - pred) * pred ** 2 * neg_w * (1 - pos)).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def wrap_angle(a: torch.Tensor) -> torch.Tensor:
    """Wrap radians to [-pi, pi)."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def wrap_half_turn(a: torch.Tensor) -> torch.Tensor:
    """Wrap radians to [-pi/2, pi/2): the orientation error when front and back are not told apart."""
    return torch.remainder(a + math.pi / 2, math.pi) - math.pi / 2


def heading_loss(s: torch.Tensor, c: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """Per-box yaw loss on the raw (sin, cos) outputs.

    An L1 loss on sin and cos lets a network unsure whether a car faces forwards or backwards answer sin = 0
    (the median of the two headings' sines), so it learns the grid axis instead of the car's orientation. Here
    the orientation is penalised modulo pi (on 2 * yaw, flip-invariant), the direction by a separate, lighter
    term on cos(yaw_pred - yaw), and the vector's length is kept near 1.
    """
    norm2 = (s * s + c * c).clamp(min=1e-6)
    sin2, cos2 = 2 * s * c / norm2, (c * c - s * s) / norm2
    orient = (sin2 - torch.sin(2 * yaw)).abs() + (cos2 - torch.cos(2 * yaw)).abs()
    cos_diff = (c * torch.cos(yaw) + s * torch.sin(yaw)) / norm2.sqrt()
    direction = F.softplus(-4.0 * cos_diff) * 0.25
    return ORIENTATION_WEIGHT * orient + direction + 0.1 * (norm2.sqrt() - 1.0).abs()


def match(logits: torch.Tensor, boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
          classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of one sample's queries to its GT. Returns (query idx, gt idx) arrays."""
    if len(gt_boxes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    with torch.no_grad():
        prob = torch.sigmoid(logits)[:, gt_labels]  # (Q, G)
        dist = torch.cdist(boxes[:, :2], gt_boxes[:, :2])  # (Q, G)
        gate = torch.tensor([MATCH_GATE.get(classes[int(c)], 2.0) for c in gt_labels])
        cost = -prob + 0.5 * dist + 1e5 * (dist > gate[None]).float()
    q, g = linear_sum_assignment(cost.numpy())
    ok = cost.numpy()[q, g] < 1e4
    return q[ok], g[ok]


def sigmoid_focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Summed sigmoid focal loss."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * ce * (1 - p_t) ** gamma).sum()


def box_targets(gt: torch.Tensor) -> torch.Tensor:
    """(G, 7) boxes → (G, 8) regression targets x, y, z, log l, log w, log h, sin, cos."""
    return torch.cat([gt[:, :3], torch.log(gt[:, 3:6].clamp(min=1e-3)), torch.sin(gt[:, 6:7]),
                      torch.cos(gt[:, 6:7])], dim=1)


def detection_loss(out: NetOutput, heatmaps: torch.Tensor, gt_boxes: list[torch.Tensor],
                   gt_labels: list[torch.Tensor], cfg: ModelConfig, yaw_loss: str = "flip_invariant"
                   ) -> dict[str, torch.Tensor]:
    """Total loss and its parts for a batch. ``yaw_loss``: ``flip_invariant`` (:func:`heading_loss`) or
    ``sincos_l1`` (L1 on sin and cos, weight 0.5 each: how the first weights were trained)."""
    if yaw_loss not in YAW_LOSSES:
        raise ConfigError(f"unknown yaw loss {yaw_loss!r}; valid: {', '.join(YAW_LOSSES)}", "train.yaw_loss")
    losses = {"heatmap": heatmap_focal_loss(out.heatmap, heatmaps)}
    w = torch.tensor(REG_WEIGHTS)
    n_layers, bsz = out.logits.shape[:2]
    for layer in range(n_layers):
        cls_l, reg_l, nll_l, n_match = 0.0, 0.0, 0.0, 0
        for b in range(bsz):
            logits, boxes, logvar = out.logits[layer, b], out.boxes[layer, b], out.logvar[layer, b]
            qi, gi = match(logits, boxes, gt_boxes[b], gt_labels[b], cfg.classes)
            target = torch.zeros_like(logits)
            if len(qi):
                qi_t, gi_t = torch.from_numpy(qi), torch.from_numpy(gi)
                target[qi_t, gt_labels[b][gi_t]] = 1.0
                pred = boxes[qi_t]
                tgt = box_targets(gt_boxes[b][gi_t])
                reg_l = reg_l + ((pred[:, :6] - tgt[:, :6]).abs() * w).sum()
                yaw_pred = torch.atan2(pred[:, 6], pred[:, 7]).detach()
                if yaw_loss == "flip_invariant":
                    reg_l = reg_l + heading_loss(pred[:, 6], pred[:, 7], gt_boxes[b][gi_t, 6]).sum()
                    yaw_resid = wrap_half_turn(gt_boxes[b][gi_t, 6] - yaw_pred)
                else:
                    reg_l = reg_l + 0.5 * (pred[:, 6:8] - tgt[:, 6:8]).abs().sum()
                    yaw_resid = wrap_angle(gt_boxes[b][gi_t, 6] - yaw_pred)
                resid = torch.cat([(tgt[:, :6] - pred[:, :6].detach()), yaw_resid[:, None]], dim=1)
                lv = logvar[qi_t]
                nll_l = nll_l + (0.5 * (torch.exp(-lv) * resid ** 2 + lv)).sum()
                n_match += len(qi)
            cls_l = cls_l + sigmoid_focal(logits, target)
        norm = max(n_match, 1)
        losses[f"cls{layer}"] = cls_l / norm
        losses[f"reg{layer}"] = reg_l / norm if n_match else out.boxes.sum() * 0.0
        losses[f"nll{layer}"] = 0.2 * nll_l / norm if n_match else out.logvar.sum() * 0.0
    losses["total"] = sum(losses.values())
    return losses

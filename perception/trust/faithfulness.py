"""Faithfulness of the attention explanations: deletion and insertion tests (Petsiuk et al. 2018 style).

For one detection, its evidence is ranked by a *relevance* (attention, random, gradient × input), the
top-k % removed (deletion, from the full input) or kept (insertion, from empty evidence), the network
re-run, and the score of the detection matched by BEV IoU read off: the curve of score against k.

Evidence units:
- LiDAR: the occupied BEV cells (stride-2 pillar grid) inside the detection's attention windows; removing a
  cell removes its pillars, i.e. exactly the points in it (a pillar's features depend on its own points only);
- camera: the stride-8 image feature cells (8 × 8 pixels of the network's input image); removing one paints
  its pixels with the image's mean colour (a neutral value).

Random ranks the same candidates at random, so attention is compared with removing the same amount of the
same kind of evidence. Runs the PyTorch network directly (the gradient baseline needs autograd).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from perception.detector.api import engine_inputs
from perception.detector.checkpoint import torch_inputs
from perception.detector.config import ModelConfig
from perception.detector.inputs import FrameInputs, prepare_frame
from perception.detector.model import FusionNet, NetOutput
from perception.detector.postprocess import OUTPUT_NAMES, PostProcessConfig, decode
from perception.eval.iou import bev_iou
from perception.frame import Detection, Frame
from perception.trust.calibration import Calibration

#: Fractions of the candidate evidence removed (deletion) or kept (insertion) per step.
STEPS = (0.05, 0.1, 0.2, 0.4)
#: Ways to aggregate the decoder's attention into one relevance per BEV cell.
AGGREGATIONS = ("last", "layers", "rollout")
#: The aggregation the detector ships (decided by ``perception explain``; see README "Explanations").
DEFAULT_AGGREGATION = "layers"
MODALITIES = ("lidar", "camera")
#: Smallest BEV IoU for a re-run query to count as the same detection.
MATCH_IOU = 0.1
#: Detections whose camera attention mass is below this are not camera-tested (not visible / LiDAR-only).
MIN_CAMERA_MASS = 0.02


@dataclass
class DetectionCurves:
    """Deletion and insertion curves of one detection: ``curves[kind][modality][method]`` = scores per step
    (normalised by the unperturbed score; step 0 is the unperturbed / empty input)."""

    frame_id: str
    label: str
    probability: float
    camera_share: float  # attention mass on the camera (the shipped aggregation)
    curves: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)

    def drop(self, modality: str, method: str) -> float | None:
        """Mean normalised deletion drop over the steps (area above the deletion curve)."""
        c = self.curves.get("deletion", {}).get(modality, {}).get(method)
        return None if c is None else float(np.mean([1.0 - v for v in c[1:]]))

    def gain(self, modality: str, method: str) -> float | None:
        """Mean normalised insertion gain over the steps, above the empty-evidence score."""
        c = self.curves.get("insertion", {}).get(modality, {}).get(method)
        return None if c is None else float(np.mean([v - c[0] for v in c[1:]]))


def _boxes(out: NetOutput) -> np.ndarray:
    """(Q, 7) last-layer boxes ``x y z l w h yaw`` of batch item 0."""
    b = out.boxes[-1, 0].detach().numpy().astype(np.float64)
    return np.column_stack([b[:, 0:3], np.exp(b[:, 3:6]), np.arctan2(b[:, 6], b[:, 7])])


class _Cached(torch.nn.Module):
    """Stands in for a sub-network whose input did not change (returns its earlier output)."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, *args: object) -> torch.Tensor:  # noqa: D102
        return self.value


class Probe:
    """Runs one frame and its perturbations through the network, keeping what the tests need."""

    def __init__(self, net: FusionNet, cfg: ModelConfig, calibration: Calibration) -> None:
        self.net, self.cfg, self.calibration = net, cfg, calibration
        self._self_attn: list[torch.Tensor] = []
        net.layers[1].self_attn.register_forward_hook(lambda m, i, o: self._self_attn.append(o[1].detach()))

    def forward(self, feed: dict[str, torch.Tensor], cached: dict[str, torch.Tensor] | None = None) -> NetOutput:
        """The network on ``feed``; ``cached`` swaps ``backbone`` / ``image_encoder`` for their earlier output."""
        saved = {}
        for name, value in (cached or {}).items():
            saved[name] = getattr(self.net, name)
            setattr(self.net, name, _Cached(value))
        try:
            with torch.no_grad():
                return self.net(**feed)
        finally:
            for name, module in saved.items():
                setattr(self.net, name, module)

    def branch_outputs(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs of the LiDAR backbone and the image encoder on ``feed`` (for caching)."""
        got: dict[str, torch.Tensor] = {}
        hooks = [getattr(self.net, n).register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o.detach()))
                 for n in ("backbone", "image_encoder")]
        try:
            self.forward(feed)
        finally:
            for h in hooks:
                h.remove()
        return got


def match_score(out: NetOutput, box: np.ndarray, class_index: int) -> float:
    """Score of the query best matching ``box`` (BEV IoU ≥ MATCH_IOU) for class ``class_index``; 0 if none."""
    iou = bev_iou(box[None], _boxes(out))[0]
    scores = torch.sigmoid(out.logits[-1, 0, :, class_index]).numpy()
    ok = iou >= MATCH_IOU
    return float(scores[ok].max()) if ok.any() else 0.0


def bev_relevance(out: NetOutput, q: int, aggregation: str, self_attn: torch.Tensor | None,
                  n_cells: int) -> np.ndarray:
    """(Hb·Wb,) attention relevance of query ``q`` per BEV cell.

    ``last``: the fusion layer's attention (mean over heads); ``layers``: both decoder layers summed;
    ``rollout``: the fusion layer plus layer 1 rolled through layer 2's self-attention
    (``0.5 I + 0.5 S``, mean over heads: the residual keeps half of a query's own path).
    """
    att = out.attn_bev[:, 0].mean(1).numpy().astype(np.float64)  # (L, Q, K)
    idx = out.attn_bev_index[:, 0].numpy()  # (L, Q, K)
    rel = np.zeros(n_cells)
    np.add.at(rel, idx[-1, q], att[-1, q])
    if aggregation == "last":
        return rel
    if aggregation == "layers":
        np.add.at(rel, idx[0, q], att[0, q])
        return rel
    if aggregation == "rollout":
        if self_attn is None:
            raise ValueError("rollout needs the fusion layer's self-attention")
        s = self_attn[0].mean(0).numpy().astype(np.float64)[q]  # (Q,)
        mix = 0.5 * s
        mix[q] += 0.5
        np.add.at(rel, idx[0].reshape(-1), (mix[:, None] * att[0]).reshape(-1))
        return rel
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")


def image_relevance(out: NetOutput, q: int) -> np.ndarray:
    """(h·w,) attention of query ``q`` per image feature cell (fusion layer, mean over heads)."""
    return out.attn_image[0, :, q].mean(0).numpy().astype(np.float64)


def gradient_relevance(net: FusionNet, feed: dict[str, torch.Tensor], q: int, class_index: int,
                       cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """|gradient × input| of the query's class logit per BEV cell (pillar features) and per image feature
    cell (image minus its mean colour)."""
    pf = feed["pillar_features"].clone().requires_grad_(True)
    img = feed["image"].clone().requires_grad_(True)
    out = net(**{**feed, "pillar_features": pf, "image": img})
    out.logits[-1, 0, q, class_index].backward()
    hb, wb = cfg.bev_shape
    per_pillar = (pf.grad * pf).sum(dim=(1, 2)).abs().detach().numpy().astype(np.float64)
    coords = feed["coords"].numpy()
    cells = (coords[:, 1] // cfg.bev_stride) * wb + coords[:, 2] // cfg.bev_stride
    bev = np.zeros(hb * wb)
    np.add.at(bev, cells, per_pillar)
    neutral = img.detach().mean(dim=(2, 3), keepdim=True)
    gi = (img.grad * (img.detach() - neutral)).sum(1)[0].abs().numpy().astype(np.float64)  # (h, w)
    hi, wi = cfg.image_feature_shape
    image = gi.reshape(hi, 8, wi, 8).sum(axis=(1, 3)).reshape(-1)
    return bev, image


def _order(relevance: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidates sorted by decreasing relevance (stable, so ties keep the cell order)."""
    return candidates[np.argsort(-relevance[candidates], kind="stable")]


def _take(order: np.ndarray, fraction: float) -> np.ndarray:
    return order[: max(1, math.ceil(fraction * len(order)))]


class FaithfulnessTest:
    """Deletion / insertion curves for every detection with probability ≥ ``min_probability``."""

    def __init__(self, net: FusionNet, cfg: ModelConfig, calibration: Calibration, min_probability: float = 0.3,
                 steps: tuple[float, ...] = STEPS, seed: int = 0) -> None:
        self.net, self.cfg, self.calibration = net, cfg, calibration
        self.probe = Probe(net, cfg, calibration)
        self.min_probability, self.steps = min_probability, steps
        self.rng = np.random.default_rng(seed)

    def frame(self, frame: Frame) -> list[DetectionCurves]:
        """Curves of the frame's detections (none for an empty frame)."""
        inputs = prepare_frame(frame, self.cfg, where=frame.frame_id or "frame")
        if len(inputs.pillars.coords) == 0:
            return []
        feed = torch_inputs(engine_inputs(inputs))
        self.probe._self_attn.clear()
        out = self.probe.forward(feed)
        self_attn = self.probe._self_attn[-1]
        raw = {k: v.detach().numpy() for k, v in zip(OUTPUT_NAMES, out)}
        dets = [d for d in decode(raw, self.cfg, self.calibration, PostProcessConfig())
                if d.probability >= self.min_probability]
        if not dets:
            return []
        cached = self.probe.branch_outputs(feed)
        return [self._detection(frame, inputs, feed, out, self_attn, cached, d) for d in dets]

    def _detection(self, frame: Frame, inputs: FrameInputs, feed: dict[str, torch.Tensor], out: NetOutput,
                   self_attn: torch.Tensor, cached: dict[str, torch.Tensor], det: Detection) -> DetectionCurves:
        cfg = self.cfg
        ci = cfg.classes.index(det.label)
        q = int(np.flatnonzero(np.all(out.logits[-1, 0].numpy() == det.logits, axis=1))[0])
        box = det.box.as_array()
        s0 = match_score(out, box, ci)
        hb, wb = cfg.bev_shape
        grad_bev, grad_img = gradient_relevance(self.net, feed, q, ci, cfg)
        result = DetectionCurves(frame.frame_id, det.label, det.probability, det.modality_share.get("camera", 0.0),
                                 {"deletion": {}, "insertion": {}})

        # LiDAR: occupied cells inside the query's attention windows.
        coords = feed["coords"].numpy()
        pillar_cell = (coords[:, 1] // cfg.bev_stride) * wb + coords[:, 2] // cfg.bev_stride
        window = np.unique(out.attn_bev_index[:, 0, q].numpy())
        cand = np.intersect1d(window, pillar_cell)
        if len(cand):
            rels = {f"attention_{a}": bev_relevance(out, q, a, self_attn, hb * wb) for a in AGGREGATIONS}
            rels["random"] = self.rng.random(hb * wb)
            rels["gradient"] = grad_bev

            def lidar_score(removed: np.ndarray) -> float:
                keep = ~np.isin(pillar_cell, removed)
                sub = {**feed, "pillar_features": feed["pillar_features"][keep],
                       "num_points": feed["num_points"][keep], "coords": feed["coords"][keep]}
                return match_score(self.probe.forward(sub, {"image_encoder": cached["image_encoder"]}), box, ci)

            self._curves(result, "lidar", cand, rels, lidar_score, s0)

        # Camera: every image feature cell, when the detection looks at the camera at all.
        att_img = image_relevance(out, q)
        if inputs.camera_valid and att_img.sum() >= MIN_CAMERA_MASS:
            hi, wi = cfg.image_feature_shape
            image = feed["image"]
            neutral = image.mean(dim=(2, 3), keepdim=True)
            rels = {"attention": att_img, "random": self.rng.random(hi * wi), "gradient": grad_img}

            def camera_score(removed: np.ndarray) -> float:
                mask = np.zeros(hi * wi, bool)
                mask[removed] = True
                m = torch.from_numpy(np.kron(mask.reshape(hi, wi), np.ones((8, 8), bool)))[None, None]
                painted = torch.where(m, neutral, image)
                return match_score(self.probe.forward({**feed, "image": painted}, {"backbone": cached["backbone"]}),
                                   box, ci)

            self._curves(result, "camera", np.arange(hi * wi), rels, camera_score, s0)
        return result

    def _curves(self, result: DetectionCurves, modality: str, cand: np.ndarray, rels: dict[str, np.ndarray],
                score: Callable[[np.ndarray], float], s0: float) -> None:
        norm = max(s0, 1e-6)
        empty = score(cand) / norm
        result.curves["deletion"][modality] = {}
        result.curves["insertion"][modality] = {}
        for name, rel in rels.items():
            order = _order(rel, cand)
            result.curves["deletion"][modality][name] = [1.0] + [score(_take(order, f)) / norm for f in self.steps]
            result.curves["insertion"][modality][name] = [empty] + [
                score(np.setdiff1d(cand, _take(order, f))) / norm for f in self.steps]


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def summarise(curves: list[DetectionCurves], frames: int, aggregation: str = DEFAULT_AGGREGATION,
              steps: tuple[float, ...] = STEPS) -> dict:
    """Areas under the curves per modality (and per class), ratios to random, aggregation comparison.

    ``*_auc``: mean normalised score over the steps (deletion: lower = more faithful; insertion: higher);
    ``ratio_to_random``: attention's mean deletion drop (insertion gain) over random's.
    """
    out: dict = {"frames": frames, "detections": len(curves), "steps": list(steps), "aggregation": aggregation,
                 "deletion": {}, "insertion": {}, "per_class": {}, "aggregations": {}, "modality_share": {}}

    def block(items: list[DetectionCurves], kind: str, modality: str, att: str) -> dict:
        have = [c for c in items if modality in c.curves.get(kind, {})]
        res: dict = {"detections": len(have)}
        for method, key in ((att, "attention"), ("random", "random"), ("gradient", "gradient")):
            res[f"{key}_auc"] = _mean([float(np.mean(c.curves[kind][modality][method][1:])) for c in have])
        measure = DetectionCurves.drop if kind == "deletion" else DetectionCurves.gain
        a = _mean([measure(c, modality, att) for c in have])
        r = _mean([measure(c, modality, "random") for c in have])
        g = _mean([measure(c, modality, "gradient") for c in have])
        key = "drop" if kind == "deletion" else "gain"
        if kind == "insertion":  # score with no evidence of this modality left (how much the score needs it)
            res["empty_score"] = _mean([c.curves[kind][modality]["random"][0] for c in have])
        res.update({f"attention_{key}": a, f"random_{key}": r, f"gradient_{key}": g,
                    "ratio_to_random": round(a / r, 3) if a is not None and r and r > 0 else None,
                    "ratio_to_gradient": round(a / g, 3) if a is not None and g and g > 0 else None})
        return res

    def att_name(modality: str, agg: str) -> str:
        return f"attention_{agg}" if modality == "lidar" else "attention"

    for kind in ("deletion", "insertion"):
        for m in MODALITIES:
            out[kind][m] = block(curves, kind, m, att_name(m, aggregation))
            out["aggregations"].setdefault(kind, {})[m] = {
                a: block(curves, kind, m, att_name(m, a)) for a in (AGGREGATIONS if m == "lidar" else ("last",))}
    for label in sorted({c.label for c in curves}):
        items = [c for c in curves if c.label == label]
        out["per_class"][label] = {kind: {m: block(items, kind, m, att_name(m, aggregation)) for m in MODALITIES}
                                   for kind in ("deletion", "insertion")}
    # Modality share by attention vs by deletion (drop from removing 20 % of each modality's top evidence).
    both = [c for c in curves if "lidar" in c.curves["deletion"] and "camera" in c.curves["deletion"]]
    if both:
        j = int(np.argmin(np.abs(np.asarray(steps) - 0.2))) + 1  # the step nearest 20 %
        att_share = np.array([c.camera_share for c in both])
        dl = np.array([max(0.0, 1 - c.curves["deletion"]["lidar"][att_name("lidar", aggregation)][j]) for c in both])
        dc = np.array([max(0.0, 1 - c.curves["deletion"]["camera"]["attention"][j]) for c in both])
        del_share = np.where(dl + dc > 0, dc / np.maximum(dl + dc, 1e-9), 0.5)
        corr = float(np.corrcoef(att_share, del_share)[0, 1]) if len(both) > 2 and att_share.std() > 0 \
            and del_share.std() > 0 else None
        out["modality_share"] = {"detections": len(both), "camera_share_attention": _mean(att_share.tolist()),
                                 "camera_share_deletion": _mean(del_share.tolist()),
                                 "pearson": None if corr is None else round(corr, 3)}
    return out


def run_faithfulness(model_dir: str, data: str, limit: int | None = None, min_probability: float = 0.3,
                     keep_frames: int = 0) -> tuple[dict, list[DetectionCurves], list[Frame]]:
    """The test over a data source (``sim:test``, a KITTI folder, a bag): summary, curves, first frames kept.

    ``keep_frames`` frames with detections are returned (for the report's pictures).
    """
    from tqdm import tqdm

    from perception.detector.checkpoint import load_model
    from perception.eval.evaluate import open_source

    torch.set_grad_enabled(True)
    net, dcfg, calibration = load_model(model_dir)
    test = FaithfulnessTest(net, dcfg.model, calibration, min_probability=min_probability)
    frames, total = open_source(data, dcfg, limit)
    curves: list[DetectionCurves] = []
    kept: list[Frame] = []
    n = 0
    for frame in tqdm(frames, total=total, desc="explain", unit="frame"):
        n += 1
        got = test.frame(frame)
        curves.extend(got)
        if got and len(kept) < keep_frames:
            kept.append(frame)
    summary = summarise(curves, n, steps=test.steps)
    summary.update({"model": str(model_dir), "data": data, "min_probability": min_probability})
    return summary, curves, kept

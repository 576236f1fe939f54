"""Parity of an engine against the PyTorch reference: raw heads and post-processed detections."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from perception.detector.config import ModelConfig
from perception.detector.postprocess import OUTPUT_NAMES, PostProcessConfig, decode
from perception.engines.base import Engine
from perception.engines.quantize import detection_errors
from perception.frame import Detection
from perception.trust.calibration import Calibration

#: FP32 engines: largest absolute difference of any float head, and of box parameters after decoding.
HEAD_TOLERANCE = 1e-4
BOX_TOLERANCE = 1e-3
#: Heads that depend on which heatmap peaks were picked as queries (ambiguous when the top-k cut is tied).
QUERY_HEADS = ("query_ref", "query_class", "logits", "boxes", "logvar", "attn_bev", "attn_bev_index", "attn_image",
               "camera_share", "query_features")
#: Reduced-precision engines (INT8/FP16): minimum detection agreement (see ``quantize.detection_errors``).
CLOSE_AGREEMENT = 0.9


@dataclass
class ParityReport:
    """Result of :func:`check_parity` over a set of frames."""

    engine: str
    frames: int
    exact: bool  # FP32 criteria: heads within HEAD_TOLERANCE, identical detections
    max_head_error: dict[str, float] = field(default_factory=dict)  # float output → max |Δ| over frames
    index_mismatches: dict[str, int] = field(default_factory=dict)  # integer output → differing entries
    detections_identical: bool = True
    max_box_error: float = 0.0
    detections: int = 0  # reference detections, all frames
    tied_frames: int = 0  # frames whose top-k query cut falls inside a tie of heatmap peaks (see topk_tied)
    agreement: float = 1.0  # worst frame (reduced precision criterion)
    center_error_m: float = 0.0
    passed: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (floats rounded)."""
        d = asdict(self)
        d["max_head_error"] = {k: float(f"{v:.3g}") for k, v in self.max_head_error.items()}
        return {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in d.items()}


def same_detections(a: list[Detection], b: list[Detection], box_tol: float = BOX_TOLERANCE) -> tuple[bool, float]:
    """(same count, classes and boxes within ``box_tol``, largest box difference) of two detection lists.

    Compared as sets (each list in (class, x, y) order): two detections with scores 1e-6 apart swap places in
    score order between two exact engines without anything having changed.
    """
    a, b = sorted(a, key=_place), sorted(b, key=_place)
    if len(a) != len(b) or any(x.box.label != y.box.label for x, y in zip(a, b)):
        return False, float("inf")
    if not a:
        return True, 0.0
    err = max(float(np.abs(x.box.as_array() - y.box.as_array()).max()) for x, y in zip(a, b))
    return err <= box_tol, err


def _place(d: Detection) -> tuple[str, float, float]:
    return d.box.label, float(d.box.center[0]), float(d.box.center[1])


def topk_tied(heatmap: np.ndarray, k: int, rtol: float = 1e-6) -> bool:
    """True when the ``k``-th and ``k+1``-th largest heatmap peaks of sample 0 are equal (within ``rtol``).

    Mirrors the network's query selection (sigmoid, 3x3 max-pool peaks, top-k). With a tie at the cut, which
    of the tied cells become queries is up to each runtime's top-k, so query-dependent heads may differ
    between two correct engines (typically on flat, untrained heatmaps or plateaus over empty space).
    """
    hm = (1.0 / (1.0 + np.exp(-heatmap[0].astype(np.float32)))).astype(np.float32)  # (C, H, W)
    padded = np.pad(hm, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = hm.shape[1:]
    pooled = np.max([padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)
    peaks = np.sort((hm * (hm == pooled)).reshape(-1))[::-1]
    if len(peaks) <= k:
        return False
    return bool(peaks[k - 1] - peaks[k] <= rtol * abs(peaks[k - 1]))


#: Axis of the query dimension in each query-dependent head.
QUERY_AXIS = {"query_ref": 1, "query_class": 1, "logits": 2, "boxes": 2, "logvar": 2, "attn_bev": 3,
              "attn_bev_index": 2, "attn_image": 2, "camera_share": 1, "query_features": 1}


def canonical_queries(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs with sample 0's queries sorted by (class, y, x) of their heatmap peak.

    The decoder is permutation-equivariant in its queries, and runtimes order equal top-k values differently,
    so two correct engines can return the same queries in a different order.
    """
    ref, cls = out["query_ref"][0], out["query_class"][0]
    order = np.lexsort((ref[:, 0], ref[:, 1], cls))
    return {k: (np.take(v, order, axis=QUERY_AXIS[k]) if k in QUERY_AXIS else v) for k, v in out.items()}


def head_errors(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, int]]:
    """(max |Δ| per float output, number of differing entries per integer output); a shape mismatch is inf / -1."""
    errs: dict[str, float] = {}
    mismatches: dict[str, int] = {}
    for name in OUTPUT_NAMES:
        a, b = ref[name], out[name]
        if np.issubdtype(a.dtype, np.integer):
            mismatches[name] = int((a != b).sum()) if a.shape == b.shape else -1
        elif a.shape != b.shape:
            errs[name] = float("inf")
        else:
            errs[name] = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
    return errs, mismatches


def check_parity(reference: Engine, candidate: Engine, inputs: list[dict[str, np.ndarray]], cfg: ModelConfig,
                 calibration: Calibration | None = None, exact: bool = True, min_score: float = 0.3) -> ParityReport:
    """Compare ``candidate`` with ``reference`` on ``inputs``.

    ``exact`` (FP32 engines): passes when every float head is within HEAD_TOLERANCE, integer heads are equal
    and the decoded detections are identical (count, classes, boxes within BOX_TOLERANCE). On a frame whose
    top-k query cut is tied (:func:`topk_tied`) only the query-independent heads are compared (the decoded
    detections still must be identical); such frames are counted in ``tied_frames``. Otherwise
    (INT8/FP16): passes when detections with score ≥ ``min_score`` agree (CLOSE_AGREEMENT) on every frame.
    """
    pp = PostProcessConfig(keep_attention=False)
    report = ParityReport(candidate.name, len(inputs), exact)
    for x in inputs:
        r, c = reference.run(x), candidate.run(x)
        errs, mismatches = head_errors(canonical_queries(r), canonical_queries(c))
        if any(mismatches.values()) and topk_tied(r["heatmap"], r["query_ref"].shape[1]):
            report.tied_frames += 1  # query sets legitimately differ: compare only query-independent heads
            errs = {k: v for k, v in errs.items() if k not in QUERY_HEADS}
            mismatches = {k: v for k, v in mismatches.items() if k not in QUERY_HEADS}
        for k, v in errs.items():
            report.max_head_error[k] = max(report.max_head_error.get(k, 0.0), v)
        for k, n in mismatches.items():
            prev = report.index_mismatches.get(k, 0)
            report.index_mismatches[k] = -1 if -1 in (n, prev) else prev + n
        dr, dc = decode(r, cfg, calibration, pp), decode(c, cfg, calibration, pp)
        same, box_err = same_detections(dr, dc)
        report.detections_identical &= same
        report.max_box_error = max(report.max_box_error, box_err)
        report.detections += len(dr)
        agreement, center, _, _, _ = detection_errors(dr, dc, min_score)
        report.agreement = min(report.agreement, agreement)
        report.center_error_m = max(report.center_error_m, center)
    if exact:
        report.passed = (report.detections_identical and not any(report.index_mismatches.values())
                         and all(v <= HEAD_TOLERANCE for v in report.max_head_error.values()))
    else:
        report.passed = report.agreement >= CLOSE_AGREEMENT
    return report

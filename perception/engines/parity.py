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
    agreement: float = 1.0  # worst frame (reduced precision criterion)
    center_error_m: float = 0.0
    passed: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (floats rounded)."""
        d = asdict(self)
        d["max_head_error"] = {k: float(f"{v:.3g}") for k, v in self.max_head_error.items()}
        return {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in d.items()}


def same_detections(a: list[Detection], b: list[Detection], box_tol: float = BOX_TOLERANCE) -> tuple[bool, float]:
    """(same count, classes and boxes within ``box_tol``, largest box difference) of two ordered lists."""
    if len(a) != len(b) or any(x.box.label != y.box.label for x, y in zip(a, b)):
        return False, float("inf")
    if not a:
        return True, 0.0
    err = max(float(np.abs(x.box.as_array() - y.box.as_array()).max()) for x, y in zip(a, b))
    return err <= box_tol, err


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
    and the decoded detections are identical (count, classes, boxes within BOX_TOLERANCE). Otherwise
    (INT8/FP16): passes when detections with score ≥ ``min_score`` agree (CLOSE_AGREEMENT) on every frame.
    """
    pp = PostProcessConfig(keep_attention=False)
    report = ParityReport(candidate.name, len(inputs), exact)
    for x in inputs:
        r, c = reference.run(x), candidate.run(x)
        errs, mismatches = head_errors(r, c)
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

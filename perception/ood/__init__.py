"""Out-of-distribution monitor: is this detection / frame unlike what the detector was trained on?

Scores (higher = more unusual) on the detector's per-detection query features, logits and point-geometry
descriptors (:mod:`perception.ood.geometry`) and its frame embedding: class-wise Mahalanobis, MahaVar, energy,
geometry, energy + geometry, and frame scores (:mod:`perception.ood.scores`). Statistics are per engine family
(FP32 engines share them; INT8 / FP16 / TensorRT have their own).
Statistics are fitted on training frames and saved beside the model (:mod:`perception.ood.stats`,
``perception fit-ood``); the benchmark on simulated shifts is ``perception eval-ood``.

    from perception.ood import OodMonitor
    monitor = OodMonitor.load("models/fusion_default", backend="onnxruntime-int8")
    res = monitor.score_result(detector(frame))
    res.detection["mahalanobis"], res.detection_flags("mahalanobis"), res.frame["frame"], res.frame_flag("frame")

Detections scoring below ``flag_min_score`` (:data:`FLAG_MIN_SCORE`, 0.3) are scored but never flagged.

This package imports torch only where the detector is run (``collect``, ``fit``, ``benchmark``).
"""

from perception.ood.gaussian import GaussianModel, fit_gaussian_model
from perception.ood.geometry import GEOMETRY_DIM, box_point_descriptors
from perception.ood.metrics import auroc, fpr_at_tpr, threshold_at_tpr
from perception.ood.monitor import FLAG_MIN_SCORE, FRAME_SCORES, OodMonitor, OodResult
from perception.ood.scores import DETECTION_SCORES, energy_score, mahalanobis_score, mahavar_score
from perception.ood.stats import GeometryModel, OodStats, engine_family, load_stats, save_stats, stats_dir

__all__ = [
    "DETECTION_SCORES", "FLAG_MIN_SCORE", "FRAME_SCORES", "GEOMETRY_DIM", "GaussianModel", "GeometryModel",
    "OodMonitor", "OodResult", "OodStats", "auroc", "box_point_descriptors", "engine_family", "energy_score",
    "fit_gaussian_model", "fpr_at_tpr", "load_stats", "mahalanobis_score", "mahavar_score", "save_stats", "stats_dir",
    "threshold_at_tpr",
]

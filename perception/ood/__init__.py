"""Out-of-distribution monitor: is this detection / frame unlike what the detector was trained on?

Scores (higher = more unusual) on the detector's per-detection query features and logits and its frame
embedding: class-wise Mahalanobis, MahaVar, energy, and frame scores (:mod:`perception.ood.scores`).
Statistics are fitted on training frames and saved beside the model (:mod:`perception.ood.stats`,
``perception fit-ood``); the benchmark on simulated shifts is ``perception eval-ood``.

    from perception.ood import OodMonitor
    monitor = OodMonitor.load("models/fusion_default")
    res = monitor.score_result(detector(frame))
    res.detection["mahalanobis"], res.detection_flags("mahalanobis"), res.frame["frame"], res.frame_flag("frame")

This package imports torch only where the detector is run (``collect``, ``fit``, ``benchmark``).
"""

from perception.ood.gaussian import GaussianModel, fit_gaussian_model
from perception.ood.metrics import auroc, fpr_at_tpr, threshold_at_tpr
from perception.ood.monitor import FRAME_SCORES, OodMonitor, OodResult
from perception.ood.scores import DETECTION_SCORES, energy_score, mahalanobis_score, mahavar_score
from perception.ood.stats import OodStats, load_stats, save_stats, stats_dir

__all__ = [
    "DETECTION_SCORES", "FRAME_SCORES", "GaussianModel", "OodMonitor", "OodResult", "OodStats", "auroc",
    "energy_score", "fit_gaussian_model", "fpr_at_tpr", "load_stats", "mahalanobis_score", "mahavar_score",
    "save_stats", "stats_dir", "threshold_at_tpr",
]

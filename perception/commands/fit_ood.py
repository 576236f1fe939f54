"""``perception fit-ood``: fit the OOD monitor's statistics for a model and save them in ``<model>/ood``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception fit-ood``."""
    p = subparsers.add_parser("fit-ood", help="fit OOD statistics (Mahalanobis, MahaVar, energy) for a model",
                              description="Run the detector over training frames (its training cache, or simulated "
                                          "train frames), fit class means + shared shrunk covariance of the query "
                                          "features and a Gaussian of the frame embeddings, set thresholds at the "
                                          "given TPR on validation frames, and write <model>/ood/ (FP32 engines) "
                                          "or <model>/ood/<backend>/ (INT8, FP16, TensorRT: their features "
                                          "differ enough to need their own statistics).")
    p.add_argument("--model", default="models/fusion_default", help="model directory")
    p.add_argument("--train-frames", type=int, default=1000, help="training frames to fit on")
    p.add_argument("--val-frames", type=int, default=400,
                   help="validation frames to set thresholds on (40 drives; 100 frames = 10 drives set frame "
                        "thresholds that flagged 13 %% of other clean drives' frames instead of 5 %%)")
    p.add_argument("--min-score", type=float, default=None, help="smallest raw detector score used (default 0.1)")
    p.add_argument("--tpr", type=float, default=0.95, help="share of in-distribution samples kept by a threshold")
    p.add_argument("--backend", default="torch", help="engine whose features are fitted: torch (also serves the "
                   "other FP32 engines), onnxruntime-int8, onnxruntime-fp16, tensorrt, ...; auto = the default one")
    p.add_argument("--real", nargs="*", default=[], metavar="DIR",
                   help="folders of clean real frames (labels not needed) that join the in-distribution reference: "
                        "even frames fit, odd frames set thresholds")
    p.add_argument("--real-repeat", type=int, default=10, help="weight of each real frame against simulated ones")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <model>/ood[/<backend>])")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Fit, save and print a summary."""
    from perception.errors import ConfigError
    from perception.ood.collect import load_detector
    from perception.ood.fit import DEFAULT_MIN_SCORE, fit_model_dir
    from perception.ood.stats import save_stats, stats_dir

    if args.train_frames < 2 or args.val_frames < 1:
        raise ConfigError("need --train-frames >= 2 and --val-frames >= 1", "fit-ood")
    if not 0.0 < args.tpr < 1.0:
        raise ConfigError(f"--tpr must be in (0, 1), got {args.tpr}", "fit-ood --tpr")
    from perception.engines.registry import resolve_backend

    backend = resolve_backend(args.model, args.backend)
    detector = load_detector(args.model, args.threads, backend)
    min_score = DEFAULT_MIN_SCORE if args.min_score is None else args.min_score
    stats = fit_model_dir(args.model, args.train_frames, args.val_frames, min_score, args.tpr, detector=detector,
                          real=args.real, real_repeat=args.real_repeat)
    meta = save_stats(stats, args.out or stats_dir(args.model, backend))
    fitted = stats.meta.get("fitted_on", {})
    print(f"OOD statistics for {args.model} ({backend}) -> {meta.parent}")
    print(f"  train: {fitted.get('train')}; detections per class {fitted.get('train_detections')}")
    print(f"  val:   {fitted.get('val')}; {fitted.get('val_detections')} ID detections")
    print(f"  shrinkage: detection {stats.detection.shrinkage:.3f}, frame {stats.frame.shrinkage:.3f}")
    for level, table in stats.thresholds.items():
        cells = ", ".join(f"{k} {v:.4g}" for k, v in table.items())
        print(f"  {level} thresholds @ {args.tpr:.0%} TPR: {cells}")
    return 0

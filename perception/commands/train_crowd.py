"""``perception train-crowd``: train the density-map crowd counter and write a model directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception train-crowd``."""
    p = subparsers.add_parser("train-crowd", help="train the crowd counter (pretrained front end, density maps)",
                              description="Train the crowd counter (ImageNet-pretrained MobileNetV2 front end, "
                                          "SimAM, dilated back end) on random crops of the configured datasets, "
                                          "drawn in turn; ship the EMA weights, fit the count interval on the "
                                          "validation images carved from them and write config, weights, "
                                          "interval, manifest and training.json. Resumes from "
                                          "<out>/checkpoint.pt when present.")
    p.add_argument("--config", type=Path, default=Path("models/crowd_default.yaml"), help="YAML config")
    p.add_argument("--out", type=Path, default=Path("models/crowd_default"), help="output model directory")
    p.add_argument("--steps", type=int, default=None, help="override train.steps")
    p.add_argument("--attention", default=None, help="override model.attention")
    p.add_argument("--threads", type=int, default=None, help="override train.threads")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Train and print a summary."""
    from perception.crowd.config import CrowdConfig
    from perception.crowd.train import train_crowd

    cfg = CrowdConfig.from_yaml(args.config)
    doc = cfg.to_dict()
    if args.steps is not None:
        doc["train"]["steps"] = args.steps
    if args.attention is not None:
        doc["model"]["attention"] = args.attention
    if args.threads is not None:
        doc["train"]["threads"] = args.threads
    cfg = CrowdConfig.from_dict(doc, f"{args.config} (with command-line overrides)")
    summary = train_crowd(cfg, args.out, resume=not args.fresh)
    print(f"crowd model ({cfg.model.attention}) -> {args.out}: {summary['steps']} steps in "
          f"{summary['seconds']:.0f} s ({summary['cpu_seconds']:.0f} s CPU, {summary['threads']} thread(s))")
    for ds, m in summary["val"]["per_source"].items():
        print(f"  val {ds:<6} n={m['n']:<4} MAE {m['mae']:.2f}  RMSE {m['rmse']:.2f}  coverage {m['coverage']:.0%} "
              f"(cross-fitted {m.get('coverage_cross_fitted', float('nan')):.0%})  constant-median MAE "
              f"{m['baseline_median_mae']:.2f}")
    return 0

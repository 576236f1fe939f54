"""``perception train-crowd``: train the density-map crowd counter and write a model directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception train-crowd``."""
    p = subparsers.add_parser("train-crowd", help="train the crowd counter (density maps, by-scene split)",
                              description="Train the compact CSRNet-style crowd counter: optional pre-training on "
                                          "simulated crowd scenes, then the real training scenes of the fixed "
                                          "by-scene split (optionally mixed with simulated ones); keep the final "
                                          "(or best-validation) weights, fit the count interval on validation and "
                                          "write config, weights, interval and manifest. Resumes from "
                                          "<out>/checkpoint.pt when present.")
    p.add_argument("--config", type=Path, default=Path("models/crowd_default.yaml"), help="YAML config")
    p.add_argument("--out", type=Path, default=Path("models/crowd_default"), help="output model directory")
    p.add_argument("--data", type=Path, default=None, help="override data.root (folder with images/ + points/)")
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
    if args.data is not None:
        doc["data"]["root"] = str(args.data)
    if args.steps is not None:
        doc["train"]["steps"] = args.steps
    if args.attention is not None:
        doc["model"]["attention"] = args.attention
    if args.threads is not None:
        doc["train"]["threads"] = args.threads
    cfg = CrowdConfig.from_dict(doc, f"{args.config} (with command-line overrides)")
    summary = train_crowd(cfg, args.out, resume=not args.fresh)
    print(f"crowd model ({cfg.model.attention}) -> {args.out}")
    print(f"  {summary['steps']} steps ({summary['sim_steps']} on simulated scenes) in {summary['seconds']:.0f} s "
          f"({summary['cpu_seconds']:.0f} s CPU); best val MAE {summary['best_val_mae']:.2f} "
          f"at step {summary['best_step']}; shipped {summary['shipped']} weights (val MAE "
          f"{summary['final_val_mae']:.2f}); interval phi {summary['interval_phi']:.3f}")
    print(f"  split: train {len(summary['split']['train'])}, val {summary['split']['val']}, "
          f"test {summary['split']['test']}")
    return 0

"""``perception crossval``: k-fold cross-validation of the detector on labelled real KITTI frames."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception crossval``."""
    p = subparsers.add_parser("crossval", help="k-fold cross-validation on labelled real frames (out-of-fold AP)",
                              description="Splits a labelled KITTI folder into k folds (shuffled with --seed), "
                                          "fine-tunes the model's weights on k-1 folds (--steps; 0 = no "
                                          "fine-tuning), detects on the held-out fold, and reports the metrics of "
                                          "`perception eval` on the pooled out-of-fold detections, with the folds "
                                          "and seeds, and a picture of every frame in --report.")
    p.add_argument("--model", default="models/fusion_default", help="model directory")
    p.add_argument("--data", type=Path, default=Path("../shared/data/kitti_labelled"), help="labelled KITTI folder")
    p.add_argument("--folds", type=int, default=4, help="number of folds (2 .. frames)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold split; fold f fine-tunes with seed + f")
    p.add_argument("--steps", type=int, default=100, help="fine-tuning steps per fold (0: shipped weights)")
    p.add_argument("--lr", type=float, default=2e-4, help="fine-tuning learning rate (AdamW)")
    p.add_argument("--json", type=Path, default=None, help="write the metrics as JSON here")
    p.add_argument("--report", type=Path, default=None, help="write PNGs and index.html into this folder")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Cross-validate and print (and optionally write) the out-of-fold metrics."""
    import torch

    from perception.commands.eval import format_metrics
    from perception.eval.crossval import crossval

    if args.threads:
        torch.set_num_threads(args.threads)
    m = crossval(Path(args.model), args.data, folds=args.folds, seed=args.seed, steps=args.steps, lr=args.lr,
                 report_dir=args.report)
    print(f"folds (seed {m['folds']['seed']}): {m['folds']['frames']}; fine-tuning {m['finetune']}")
    print(format_metrics({**m, "model": f"{m['model']} out-of-fold"}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(m, indent=2) + "\n")
    return 0

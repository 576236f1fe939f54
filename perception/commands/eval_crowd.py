"""``perception eval-crowd``: MAE / RMSE / interval coverage of a crowd model per dataset, with an HTML report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception eval-crowd``."""
    p = subparsers.add_parser("eval-crowd", help="evaluate the crowd counter per dataset (HTML report)",
                              description="Count images and report MAE, RMSE, interval coverage and a "
                                          "constant-median baseline per dataset, with a scatter plot and density "
                                          "overlays in OUT/report.html. Without --data: the validation split of "
                                          "every training dataset of the model. With --data DIR (images/ + "
                                          "points/): every image of DIR, or only its validation split when DIR is "
                                          "a training dataset.")
    p.add_argument("--model", type=Path, default=Path("models/crowd_default"), help="model directory")
    p.add_argument("--data", type=Path, default=None, help="folder with images/ and points/ (default: the "
                                                           "model's datasets)")
    p.add_argument("--split", choices=["train", "val"], default=None,
                   help="split of a training dataset to evaluate (default val)")
    p.add_argument("--out", type=Path, default=Path("out/crowd_eval"), help="report folder")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate, print, write report.json and report.html."""
    import torch

    from perception.crowd.checkpoint import load_crowd_model
    from perception.crowd.evaluate import evaluate_model, metrics_markdown, write_report

    torch.set_num_threads(args.threads)
    report, samples = evaluate_model(args.model, args.data, args.split)
    print(f"{report['n']} images ({report['data']}, split {report['split']})")
    print(metrics_markdown(report))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    net, _, interval = load_crowd_model(args.model)
    print(f"report -> {write_report(net, interval, report, samples, args.out)}")
    return 0

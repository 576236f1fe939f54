"""``perception eval-crowd``: MAE / RMSE / interval coverage of a crowd model, per image and per source."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception eval-crowd``."""
    p = subparsers.add_parser("eval-crowd", help="evaluate the crowd counter on images/ + points/",
                              description="Count every image of DIR (images/ + points/*.json) and print MAE, RMSE, "
                                          "interval coverage and a per-image table. When DIR is the training "
                                          "source only its held-out test split is evaluated. Writes a PNG of "
                                          "density overlays.")
    p.add_argument("--model", type=Path, default=Path("models/crowd_default"), help="model directory")
    p.add_argument("--data", type=Path, required=True, help="folder with images/ and points/")
    p.add_argument("--split", choices=["train", "val", "test"], default=None,
                   help="evaluate only this split of the model's by-scene split")
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    p.add_argument("--png", type=Path, default=None, help="overlay PNG (default: next to --json, or "
                                                          "out/crowd_eval.png)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate, print, write JSON and PNG."""
    import torch

    from perception.crowd.checkpoint import load_crowd_model
    from perception.crowd.evaluate import evaluate_dir, save_overlays

    if args.threads:
        torch.set_num_threads(args.threads)
    report, samples = evaluate_dir(args.model, args.data, args.split)
    if report["split"] != "all":
        print(f"{args.data} is split by the model config: evaluating the held-out '{report['split']}' split only")
    print(f"{'image':<16}{'source':<11}{'gt':>6}{'pred':>9}{'interval':>18}{'error':>9}")
    for r in report["images"]:
        print(f"{r['image']:<16}{r['source']:<11}{r['gt']:>6}{r['pred']:>9.1f}"
              f"{'[' + format(r['low'], '.1f') + ', ' + format(r['high'], '.1f') + ']':>18}{r['error']:>+9.1f}")
    for src, m in report["per_source"].items():
        print(f"  {src:<10} n={m['n']:<3} MAE {m['mae']:.2f}  RMSE {m['rmse']:.2f}  coverage {m['coverage']:.0%}")
    print(f"  all        n={report['n']:<3} MAE {report['mae']:.2f}  RMSE {report['rmse']:.2f}  "
          f"coverage {report['coverage']:.0%} (nominal {report['interval_level']:.0%})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"  report -> {args.json}")
    png = args.png or (args.json.with_suffix(".png") if args.json else Path("out/crowd_eval.png"))
    net, _, interval = load_crowd_model(args.model)
    print(f"  overlays -> {save_overlays(net, interval, samples, png)}")
    return 0

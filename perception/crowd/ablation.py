"""Attention ablation: the same data, seed and short schedule for every variant; test-split metrics."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from perception.crowd.checkpoint import load_crowd_model
from perception.crowd.config import ATTENTION_VARIANTS, CrowdConfig
from perception.crowd.data import load_split
from perception.crowd.evaluate import evaluate_samples
from perception.crowd.model import count_parameters
from perception.crowd.train import train_crowd

log = logging.getLogger(__name__)


def run_ablation(cfg: CrowdConfig, out_root: str | Path, steps: int, batch_size: int, crop: int,
                 variants: tuple[str, ...] = ATTENTION_VARIANTS) -> list[dict]:
    """Train every variant for ``steps`` and evaluate on the held-out test split; rows are also written to
    ``<out_root>/ablation.json``."""
    out_root = Path(out_root)
    rows = []
    for variant in variants:
        c = copy.deepcopy(cfg)
        c.model.attention = variant
        c.train.steps = steps
        c.train.batch_size = batch_size
        c.train.crop = crop
        c.train.eval_every = max(1, steps // 4)
        c.train.checkpoint_every = steps
        summary = train_crowd(c, out_root / variant, resume=False, progress=False)
        net, _, interval = load_crowd_model(out_root / variant)
        test = evaluate_samples(net, interval, load_split(c.data, c.model.max_side)["test"])
        row = {"attention": variant, "params": count_parameters(net), "steps": steps,
               "train_s": round(summary["seconds"], 1), "val_mae": round(summary["final_val_mae"], 2),
               "test_mae": round(test["mae"], 2), "test_rmse": round(test["rmse"], 2),
               "per_source": {k: round(v["mae"], 2) for k, v in test["per_source"].items()}}
        log.info("ablation %s", row)
        rows.append(row)
        (out_root / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def ablation_markdown(rows: list[dict]) -> str:
    """Markdown table of :func:`run_ablation` rows."""
    lines = ["| attention | params | steps | train s | val MAE | test MAE | test RMSE | cityuhk MAE | "
             "handclick MAE |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ps = r["per_source"]
        lines.append(f"| {r['attention']} | {r['params']} | {r['steps']} | {r['train_s']:.0f} | "
                     f"{r['val_mae']:.2f} | {r['test_mae']:.2f} | {r['test_rmse']:.2f} | "
                     f"{ps.get('cityuhk', float('nan')):.2f} | {ps.get('handclick', float('nan')):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m perception.crowd.ablation``: run the ablation and print the table."""
    import argparse

    import torch

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--config", type=Path, default=Path("models/crowd_default.yaml"))
    p.add_argument("--out", type=Path, default=Path("out/crowd_ablation"))
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=160)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = CrowdConfig.from_yaml(args.config)
    torch.set_num_threads(cfg.train.threads)
    rows = run_ablation(cfg, args.out, args.steps, args.batch_size, args.crop)
    print(ablation_markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

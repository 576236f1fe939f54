"""Attention ablation (and simulated vs no simulated scenes): the same data, seed and short schedule for every run;
validation and test-split metrics."""

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


def _short_config(cfg: CrowdConfig, attention: str, with_sim: bool, steps: int, batch_size: int,
                  crop: int, sim_steps: int | None = None) -> CrowdConfig:
    """``cfg``'s recipe shortened: ``steps`` real-image steps (and ``sim_steps`` simulated ones, default the
    config's), the cell loss rescaled to the crop (the same per-crop sum), no best-validation selection (the
    final weights, or their average, are evaluated: selecting on 7 validation images would add noise of its own
    to the comparison)."""
    c = copy.deepcopy(cfg)
    c.model.attention = attention
    if sim_steps is not None:
        c.sim.steps = sim_steps
    if not with_sim:
        c.sim.steps = 0
        c.train.sim_fraction = 0.0
    c.train.steps = steps
    c.train.batch_size = batch_size
    c.train.crop = crop
    c.train.cell_loss_weight = cfg.train.cell_loss_weight * (crop / cfg.train.crop) ** 2  # same per-crop sum
    c.train.select_best = False
    c.train.whole_steps = 0  # the crop stages only
    c.train.eval_every = max(1, (c.sim.steps + steps) // 4)
    c.train.checkpoint_every = max(1, (c.sim.steps + steps) // 4)
    c.train.warmup_steps = min(c.train.warmup_steps, max(1, steps // 10))
    return c


def run_ablation(cfg: CrowdConfig, out_root: str | Path, steps: int, batch_size: int, crop: int,
                 variants: tuple[str, ...] = ATTENTION_VARIANTS, without_sim: tuple[str, ...] = ("combined",),
                 progress: bool = True, sim_steps: int | None = None) -> list[dict]:
    """Train every attention variant with ``cfg``'s recipe (simulated scenes as configured) shortened to ``steps``
    real-stage steps, and the ``without_sim`` variants once more on the real images only; evaluate each on the
    validation and held-out test splits. Rows are also written to ``<out_root>/ablation.json``; a finished run
    resumes from its checkpoint instead of training again."""
    out_root = Path(out_root)
    rows = []
    runs = [(v, True) for v in variants] + [(v, False) for v in without_sim]
    for variant, with_sim in runs:
        c = _short_config(cfg, variant, with_sim, steps, batch_size, crop, sim_steps)
        run_dir = out_root / (variant if with_sim else f"{variant}_real_only")
        summary = train_crowd(c, run_dir, resume=True, progress=progress)
        net, _, interval = load_crowd_model(run_dir)
        test = evaluate_samples(net, interval, load_split(c.data, c.model.max_side)["test"])
        row = {"attention": variant, "sim": with_sim and bool(c.sim.steps or c.train.sim_fraction),
               "params": count_parameters(net), "sim_steps": c.sim.steps, "steps": steps,
               "sim_fraction": c.train.sim_fraction, "train_s": round(summary["seconds"], 1),
               "cpu_s": round(summary["cpu_seconds"], 1), "val_mae": round(summary["final_val_mae"], 2),
               "test_mae": round(test["mae"], 2), "test_rmse": round(test["rmse"], 2),
               "per_source": {k: round(v["mae"], 2) for k, v in test["per_source"].items()}}
        log.info("ablation %s", row)
        rows.append(row)
        (out_root / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def ablation_markdown(rows: list[dict]) -> str:
    """Markdown table of :func:`run_ablation` rows."""
    lines = ["| attention | simulated scenes | params | steps | CPU s | val MAE | test MAE | test RMSE | "
             "test cityuhk MAE | test handclick MAE |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ps = r["per_source"]
        sim = (f"{r['sim_steps']} pre-training steps, " if r["sim_steps"] else "") + (
            f"{r['sim_fraction']:.0%} of each batch" if r["sim_fraction"] else "") if r["sim"] else "no"
        lines.append(f"| {r['attention']} | {sim} | {r['params']} | {r['sim_steps'] + r['steps']} | "
                     f"{r['cpu_s']:.0f} | {r['val_mae']:.2f} | {r['test_mae']:.2f} | {r['test_rmse']:.2f} | "
                     f"{ps.get('cityuhk', float('nan')):.2f} | {ps.get('handclick', float('nan')):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m perception.crowd.ablation``: run the ablation and print the table."""
    import argparse

    import torch

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--config", type=Path, default=Path("models/crowd_default.yaml"))
    p.add_argument("--out", type=Path, default=Path("out/crowd_ablation"))
    p.add_argument("--steps", type=int, default=600, help="real-stage steps per variant")
    p.add_argument("--sim-steps", type=int, default=None, help="simulated pre-training steps (default: config's)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=160)
    p.add_argument("--variants", nargs="+", default=list(ATTENTION_VARIANTS), choices=ATTENTION_VARIANTS)
    p.add_argument("--without-sim", nargs="*", default=["combined"], choices=ATTENTION_VARIANTS,
                   help="variants also trained on the real images only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = CrowdConfig.from_yaml(args.config)
    torch.set_num_threads(cfg.train.threads)
    rows = run_ablation(cfg, args.out, args.steps, args.batch_size, args.crop, tuple(args.variants),
                        tuple(args.without_sim), progress=not args.quiet, sim_steps=args.sim_steps)
    print(ablation_markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""K-fold cross-validation of a crowd training recipe over the training scenes (split by scene, never by view).

Each fold trains the recipe on the other folds' training scenes and is validated on its own; the configured val and
test scenes are left out of every fold run. The simulated pre-training stage never reads a real image, so the folds
can start from one shared checkpoint written at its end (``--sim-checkpoint``: the ``checkpoint.pt`` of any run of
the same recipe, copied when it was at step ``sim.steps``) instead of each running it again. Reported per fold and
pooled over all held-out images: the MAE at the end of the crop stages (the moving average if the recipe keeps one)
and of the shipped weights (after the whole-frame stage, when the recipe has one).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import torch

from perception.crowd.checkpoint import load_crowd_model
from perception.crowd.config import CrowdConfig
from perception.crowd.data import list_names, load_split, scene_of, source_of, split_names
from perception.crowd.train import CHECKPOINT_FILE, WHOLE_KEYS, evaluate_counts, train_crowd
from perception.errors import ModelError

log = logging.getLogger(__name__)


def scene_folds(cfg: CrowdConfig, names: list[str], k: int, seed: int = 0) -> list[list[str]]:
    """The training scenes of ``cfg``'s split in ``k`` folds: each source's scenes shuffled (seeded) and dealt
    round-robin, so every fold holds whole scenes of both sources."""
    train = split_names(names, cfg.data)["train"]
    scenes = sorted({scene_of(n) for n in train})
    if k < 2 or k > len(scenes):
        raise ValueError(f"need 2 <= k <= {len(scenes)} training scenes, got k={k}")
    rng = np.random.default_rng(seed)
    order: list[str] = []
    for src in sorted({source_of(s) for s in scenes}):
        group = [s for s in scenes if source_of(s) == src]
        order += [group[i] for i in rng.permutation(len(group))]
    folds: list[list[str]] = [[] for _ in range(k)]
    for i, scene in enumerate(order):
        folds[i % k].append(scene)
    return [sorted(f) for f in folds]


def fold_config(cfg: CrowdConfig, fold: list[str]) -> CrowdConfig:
    """``cfg`` validated on ``fold``'s scenes, with its own val and test scenes out of training."""
    c = copy.deepcopy(cfg)
    c.data.test_scenes = sorted(set(cfg.data.test_scenes) | set(cfg.data.val_scenes))
    c.data.val_scenes = list(fold)
    return CrowdConfig.from_dict(c.to_dict(), "fold config")


def seed_from_sim_checkpoint(sim_checkpoint: str | Path, cfg: CrowdConfig, run_dir: Path) -> None:
    """Start ``run_dir`` from a checkpoint written at the end of the simulated stage of a run of the same recipe
    (with any split and whole-frame stage): the weights, optimiser and random state there do not depend on the
    real images, so the run goes on exactly as if it had pre-trained itself (only the logged val MAE after the
    simulated stage is the other run's)."""
    state = torch.load(sim_checkpoint, map_location="cpu", weights_only=False)
    saved = CrowdConfig.from_dict(state["extra"]["config"], str(sim_checkpoint))
    if state["step"] != cfg.sim.steps or not cfg.sim.steps:
        raise ModelError(f"checkpoint is at step {state['step']}, not at the end of the simulated stage "
                         f"({cfg.sim.steps})", str(sim_checkpoint))
    a, b = saved.to_dict(), cfg.to_dict()
    for d in (a, b):  # neither the split nor the (later) whole-frame stage matters before the real images
        d.pop("data")
        d["train"] = {key: v for key, v in d["train"].items() if key not in WHOLE_KEYS}
    if a != b:
        raise ModelError("checkpoint was written with another recipe", str(sim_checkpoint))
    state["extra"]["config"] = cfg.to_dict()
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, run_dir / CHECKPOINT_FILE)


def run_crossval(cfg: CrowdConfig, out_root: str | Path, k: int = 4, seed: int = 0,
                 sim_checkpoint: str | Path | None = None, progress: bool = True) -> dict:
    """Train and validate every fold (resuming finished or interrupted folds); returns and writes
    ``<out_root>/crossval.json``."""
    out_root = Path(out_root)
    names = list_names(cfg.data.root)
    folds = scene_folds(cfg, names, k, seed)
    crop_end = cfg.sim.steps + cfg.train.steps
    rows = []
    for i, fold in enumerate(folds):
        c = fold_config(cfg, fold)
        run_dir = out_root / f"fold{i}"
        if sim_checkpoint is not None and not (run_dir / CHECKPOINT_FILE).is_file():
            seed_from_sim_checkpoint(sim_checkpoint, c, run_dir)
        summary = train_crowd(c, run_dir, resume=True, progress=progress)
        net, _, _ = load_crowd_model(run_dir)
        held = load_split(c.data, c.model.max_side)["val"]
        preds, truths = evaluate_counts(net, held)
        crop = [h["val_mae"] for h in summary["history"] if h["step"] == crop_end and h["stage"] == "real"]
        rows.append({"fold": i, "scenes": fold, "images": [s.name for s in held], "preds": preds, "truths": truths,
                     "mae": float(np.mean(np.abs(np.subtract(preds, truths)))),
                     "crop_stage_mae": crop[-1] if crop else None, "cpu_seconds": summary["cpu_seconds"],
                     "shipped": summary["shipped"]})
        log.info("fold %d (%s): MAE %.2f (crop stage end %s)", i, ", ".join(fold), rows[-1]["mae"],
                 f"{crop[-1]:.2f}" if crop else "-")
    n = [len(r["images"]) for r in rows]
    report = {"k": k, "seed": seed, "folds": rows,
              "mae": float(np.average([r["mae"] for r in rows], weights=n)),
              "crop_stage_mae": (float(np.average([r["crop_stage_mae"] for r in rows], weights=n))
                                 if all(r["crop_stage_mae"] is not None for r in rows) else None),
              "cpu_seconds": float(sum(r["cpu_seconds"] for r in rows))}
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "crossval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m perception.crowd.crossval --config C --out DIR [--k 4] [--sim-checkpoint CKPT]``."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--config", type=Path, default=Path("models/crowd_default.yaml"))
    p.add_argument("--out", type=Path, default=Path("out/crowd_crossval"))
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    p.add_argument("--sim-checkpoint", type=Path, default=None,
                   help="checkpoint.pt of a run of this recipe at the end of its simulated stage")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = CrowdConfig.from_yaml(a.config)
    torch.set_num_threads(cfg.train.threads)
    if a.sim_checkpoint is not None and not a.sim_checkpoint.is_file():
        raise SystemExit(f"no such checkpoint: {a.sim_checkpoint}")
    report = run_crossval(cfg, a.out, a.k, a.seed, a.sim_checkpoint, progress=not a.quiet)
    for r in report["folds"]:
        print(f"fold {r['fold']} ({len(r['images'])} images: {', '.join(r['scenes'])}): MAE {r['mae']:.2f}, "
              f"crop-stage end {r['crop_stage_mae']}")
    print(f"pooled MAE {report['mae']:.2f} (crop-stage end {report['crop_stage_mae']}), "
          f"{report['cpu_seconds'] / 60:.1f} CPU min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""K-fold cross-validation of crowd training recipes over the training scenes (split by scene, never by view).

Each fold trains a recipe on the other folds' training scenes and is validated on its own; the configured val and
test scenes are left out of every fold run. Recipes that differ only in their whole-frame stage share each fold's
crop stages (trained once), so comparing them costs one whole-frame stage per fold and recipe. The simulated
pre-training stage never reads a real image, so the folds can start from one shared checkpoint written at its end
(``--sim-checkpoint``: the ``checkpoint.pt`` of any run of the same recipe, copied when it was at step
``sim.steps``) instead of each running it again. Reported per fold and pooled over all held-out images: the MAE of
the crop-stage weights alone (recipe ``crop``) and of each recipe.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from perception.crowd.checkpoint import load_crowd_model, replace_interval
from perception.crowd.config import CrowdConfig
from perception.crowd.data import list_names, load_split, scene_of, source_of, split_names
from perception.crowd.interval import CountInterval, fit_interval
from perception.crowd.train import CHECKPOINT_FILE, REAL_STAGE_KEYS, WHOLE_KEYS, evaluate_counts, resumable, train_crowd
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
    c.data.train_on_val = False  # the fold's held-out scenes never train
    return CrowdConfig.from_dict(c.to_dict(), "fold config")


def seed_from_sim_checkpoint(sim_checkpoint: str | Path, cfg: CrowdConfig, run_dir: Path) -> None:
    """Start ``run_dir`` from a checkpoint written at the end of the simulated stage of a run of the same recipe
    (with any split and whole-frame stage): the weights, optimiser and random state there do not depend on the
    real images, so the run goes on exactly as if it had pre-trained itself (only the logged val MAE after the
    simulated stage is the other run's)."""
    state = torch.load(sim_checkpoint, map_location="cpu", weights_only=False)
    saved = CrowdConfig.from_dict(state["extra"]["config"], str(sim_checkpoint))  # keys added since: defaults
    if state["step"] != cfg.sim.steps or not cfg.sim.steps:
        raise ModelError(f"checkpoint is at step {state['step']}, not at the end of the simulated stage "
                         f"({cfg.sim.steps})", str(sim_checkpoint))
    a, b = saved.to_dict(), cfg.to_dict()
    for d in (a, b):  # neither the split nor the (later) real-image stages matter before the real images
        d.pop("data")
        d["train"] = {key: v for key, v in d["train"].items() if key not in WHOLE_KEYS + REAL_STAGE_KEYS}
    if a != b:
        raise ModelError("checkpoint was written with another recipe", str(sim_checkpoint))
    state["extra"]["config"] = cfg.to_dict()
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, run_dir / CHECKPOINT_FILE)


def _evaluate_fold(run_dir: Path, c: CrowdConfig) -> dict:
    net, _, _ = load_crowd_model(run_dir)
    held = load_split(c.data, c.model.max_side)["val"]
    preds, truths = evaluate_counts(net, held)
    summary = json.loads((run_dir / "training.json").read_text())
    return {"images": [s.name for s in held], "preds": preds, "truths": truths,
            "mae": float(np.mean(np.abs(np.subtract(preds, truths)))), "cpu_seconds": summary["cpu_seconds"]}


def run_crossval(variants: dict[str, CrowdConfig], out_root: str | Path, k: int = 4, seed: int = 0,
                 sim_checkpoint: str | Path | None = None, progress: bool = True,
                 only_folds: list[int] | None = None) -> dict:
    """Cross-validate recipes that share their crop stages and differ only in the whole-frame stage: per fold,
    the crop stages are trained once (``<out_root>/fold<i>/crop``, also reported as the recipe ``crop``: its
    final weights) and every variant's whole-frame stage extends that run (``fold<i>/<name>``). Finished or
    interrupted runs resume. ``only_folds`` trains just those folds (to spread the folds over processes; a last
    run without it collects them) and writes nothing. Returns and writes ``<out_root>/crossval.json``."""
    out_root = Path(out_root)
    first = next(iter(variants.values()))
    crop_cfg = copy.deepcopy(first)
    crop_cfg.train.whole_steps = 0
    crop_end = crop_cfg.sim.steps + crop_cfg.train.steps
    for name, v in variants.items():
        if name == "crop" or not resumable(crop_cfg.to_dict(), v, crop_end):
            raise ValueError(f"variant {name!r} differs from the others in more than the whole-frame stage")
    folds = scene_folds(first, list_names(first.data.root), k, seed)
    rows: dict[str, list[dict]] = {"crop": [], **{name: [] for name in variants}}
    for i, fold in enumerate(folds):
        if only_folds is not None and i not in only_folds:
            continue
        c = fold_config(crop_cfg, fold)
        crop_dir = out_root / f"fold{i}" / "crop"
        if sim_checkpoint is not None and not (crop_dir / CHECKPOINT_FILE).is_file():
            seed_from_sim_checkpoint(sim_checkpoint, c, crop_dir)
        train_crowd(c, crop_dir, resume=True, progress=progress)
        rows["crop"].append({"fold": i, "scenes": fold, **_evaluate_fold(crop_dir, c)})
        for name, v in variants.items():
            vc = fold_config(v, fold)
            run_dir = out_root / f"fold{i}" / name
            if v.train.whole_steps and not (run_dir / CHECKPOINT_FILE).is_file():
                run_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(crop_dir / CHECKPOINT_FILE, run_dir / CHECKPOINT_FILE)
            train_crowd(vc, run_dir, resume=True, progress=progress)
            rows[name].append({"fold": i, "scenes": fold, **_evaluate_fold(run_dir, vc)})
        log.info("fold %d (%s): %s", i, ", ".join(fold),
                 ", ".join(f"{name} MAE {r[-1]['mae']:.2f}" for name, r in rows.items()))
    report = {"k": k, "seed": seed, "folds": [[r["fold"], r["scenes"]] for r in rows["crop"]], "recipes": {}}
    if only_folds is not None:
        return report
    for name, r in rows.items():
        err = np.concatenate([np.subtract(x["preds"], x["truths"]) for x in r])
        report["recipes"][name] = {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
                                   "n": int(err.size), "fold_mae": [x["mae"] for x in r], "runs": r}
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "crossval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def interval_from_crossval(report: dict, recipe: str, level: float) -> CountInterval:
    """The count interval fitted (split-conformal, :func:`~perception.crowd.interval.fit_interval`) on the
    pooled out-of-fold predictions of ``recipe`` in a :func:`run_crossval` report: honest for a model trained
    on every training scene, where no held-out image is left to fit it on."""
    if recipe not in report.get("recipes", {}):
        raise ValueError(f"recipe {recipe!r} is not in the report ({sorted(report.get('recipes', {}))})")
    runs = report["recipes"][recipe]["runs"]
    preds = [p for r in runs for p in r["preds"]]
    truths = [t for r in runs for t in r["truths"]]
    return fit_interval(preds, truths, level)


def main(argv: list[str] | None = None) -> int:
    """``python -m perception.crowd.crossval --config C [C2 ...] --out DIR [--k 4] [--sim-checkpoint CKPT]``."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--config", type=Path, nargs="+", default=[Path("models/crowd_default.yaml")],
                   help="recipes that differ only in their whole-frame stage")
    p.add_argument("--out", type=Path, default=Path("out/crowd_crossval"))
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    p.add_argument("--sim-checkpoint", type=Path, default=None,
                   help="checkpoint.pt of a run of this recipe at the end of its simulated stage")
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="train only these folds (run the folds in several processes, then once without --folds)")
    p.add_argument("--interval-into", type=Path, default=None, metavar="MODEL_DIR",
                   help="write the interval fitted on the first recipe's out-of-fold predictions into this model "
                        "directory (a final fit that trained on its val scenes too)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.interval_into is not None and a.folds is not None:
        p.error("--interval-into needs every fold: run it without --folds")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    variants = {path.stem: CrowdConfig.from_yaml(path) for path in a.config}
    torch.set_num_threads(next(iter(variants.values())).train.threads)
    if a.sim_checkpoint is not None and not a.sim_checkpoint.is_file():
        raise SystemExit(f"no such checkpoint: {a.sim_checkpoint}")
    report = run_crossval(variants, a.out, a.k, a.seed, a.sim_checkpoint, progress=not a.quiet, only_folds=a.folds)
    for i, scenes in report["folds"]:
        print(f"fold {i}: {', '.join(scenes)}")
    if a.interval_into is not None:
        name = next(iter(variants))
        interval = interval_from_crossval(report, name, variants[name].train.interval_level)
        replace_interval(a.interval_into, interval)
        print(f"interval of {a.interval_into}: phi {interval.phi:.3f} from {interval.fitted_on} out-of-fold images "
              f"of recipe {name}")
    for name, r in report["recipes"].items():
        print(f"{name}: pooled MAE {r['mae']:.2f} RMSE {r['rmse']:.2f} over {r['n']} images; per fold "
              + ", ".join(f"{m:.2f}" for m in r["fold_mae"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Write ``MODEL_CARD.md`` of a crowd model from its training summary and measured reports (no typed numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from perception.crowd.ablation import ablation_markdown
from perception.crowd.checkpoint import WEIGHTS_FILE
from perception.crowd.config import CrowdConfig
from perception.crowd.model import CrowdNet, count_parameters


def _metrics_table(report: dict) -> str:
    lines = ["| source | images | MAE | RMSE | interval coverage |", "|---|---|---|---|---|"]
    for src, m in report["per_source"].items():
        lines.append(f"| {src} | {m['n']} | {m['mae']:.2f} | {m['rmse']:.2f} | {m['coverage']:.0%} |")
    lines.append(f"| **all** | {report['n']} | {report['mae']:.2f} | {report['rmse']:.2f} | "
                 f"{report['coverage']:.0%} |")
    return "\n".join(lines)


def _image_table(report: dict) -> str:
    lines = ["| image | gt | pred | interval |", "|---|---|---|---|"]
    for r in report["images"]:
        lines.append(f"| {r['image']} | {r['gt']} | {r['pred']:.1f} | [{r['low']:.1f}, {r['high']:.1f}] |")
    return "\n".join(lines)


def _selection_text(train: dict, t) -> str:
    """How the shipped weights were chosen, from ``training.json``."""
    kind = str(train["shipped"])
    ema = f"an exponential moving average of the weights (decay {t.ema_decay})" if t.ema_decay > 0 else "the weights"
    if kind.startswith("whole_average"):
        start = "best-validation" if "best_val" in kind else "final"
        whole = [h for h in train["history"] if h.get("stage") == "whole"]
        spread = (f" (val MAE of the running weights at its {len(whole)} evaluations: "
                  f"{min(h['val_mae'] for h in whole):.2f}-{max(h['val_mae'] for h in whole):.2f}; monitored, "
                  "not used to choose anything)") if whole else ""
        return (f"The whole-frame stage starts from the crop stage's {start} weights ({ema}); shipped: the "
                f"equal-weight average of the whole-frame stage's weights over its last {1 - t.whole_average_from:.0%} "
                f"steps{spread}, val MAE {train['final_val_mae']:.2f}.")
    if kind.startswith("best_val"):
        return (f"Validation MAE of {ema} every {t.eval_every} steps; shipped: the weights at step "
                f"{train['best_step']}, best mean val MAE over the last {t.select_window} evaluation(s) "
                f"({train['best_val_mae']:.2f}; only {t.select_after} or more steps into the real-image stage). "
                f"Val MAE of the shipped weights {train['final_val_mae']:.2f}. The 7-image val set is small, so this "
                "selection is noisy.")
    return (f"Shipped: the **final** {ema} (val MAE {train['final_val_mae']:.2f}; best smoothed val MAE during "
            f"training {train['best_val_mae']:.2f} at step {train['best_step']}).")


def _steps_text(cfg: CrowdConfig, train: dict) -> str:
    sim_steps = int(train.get("sim_steps", 0))
    whole = int(train.get("whole_steps", 0))
    crop_steps = train["steps"] - sim_steps - whole
    text = f"{crop_steps} steps" if not sim_steps else (
        f"{sim_steps} pre-training steps on the simulated scenes (lr {cfg.sim.lr}) then "
        f"{crop_steps} steps on the real training images")
    return text + f" of batch {cfg.train.batch_size}" + (_whole_text(cfg) if whole else "")


def _whole_text(cfg: CrowdConfig) -> str:
    t = cfg.train
    count_w = t.count_loss_weight if t.whole_count_loss_weight < 0 else t.whole_count_loss_weight
    zoom = f", zoomed in by a random factor in [1, {t.whole_scale_max}] and cropped back to the frame size" if (
        t.whole_scale_max > 1) else ""
    bn = ("BatchNorm statistics recomputed on the whole training frames and their mirror images, then frozen (so "
          "the training forward pass is the inference one)" if t.whole_freeze_bn else "BatchNorm in training mode")
    return (f", then a final stage of {t.whole_steps} steps on **whole** training frames (batch "
            f"{t.whole_batch_size}{zoom}, flips and colour jitter; constant lr {t.whole_lr} after a "
            f"{t.whole_warmup_steps}-step warm-up; count-loss weight {count_w}; {bn})")


def constant_baseline(root: str | Path, split: dict[str, list[str]]) -> dict[str, float]:
    """MAE / RMSE on the test split of always answering the mean training count (the bar a model must beat)."""
    def counts(names: list[str]) -> np.ndarray:
        return np.array([len(json.loads((Path(root) / "points" / f"{n}.json").read_text())["points"])
                         for n in names], dtype=float)

    mean = float(counts(split["train"]).mean())
    err = counts(split["test"]) - mean
    return {"constant": mean, "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean()))}


def _architecture(cfg: CrowdConfig, params: int, size_kb: float) -> str:
    m = cfg.model
    where = "every front-end stage" if m.stem_attention else "front-end stages 2 and 3 (not the stride-2 stem)"
    return (f"Density-map people counter: compact CSRNet-style network (stride-2 stem + 2 max-pools = stride 8; "
            f"front-end widths {m.front_channels} with {m.front_depth} 3x3 convolutions per stage, dilated "
            f"(d={m.dilation}) back end {m.back_channels}, 1x1 density head), {m.norm} normalisation, "
            f"parameter-free `{m.attention}` attention after {where} and after the back end; {params} parameters, "
            f"`{WEIGHTS_FILE}` {size_kb:.0f} KiB. Trained from scratch (no pretrained weights exist here). Input: RGB "
            f"resized so the longer side is at most {m.max_side} px; output: density at stride 8, count = its sum.")


def _sim_text(cfg: CrowdConfig) -> list[str]:
    s, t = cfg.sim, cfg.train
    if not s.steps and not t.sim_fraction:
        return ["No simulated scenes were used.", ""]
    from perception.crowd.sim_scenes import SimCrowdOptions

    opts = SimCrowdOptions(people_max=s.people_max)
    use = []
    if s.steps:
        use.append(f"{s.steps} pre-training steps on them alone")
    if t.sim_fraction:
        use.append(f"{t.sim_fraction:.0%} of every fine-tuning batch drawn from them")
    return [f"{s.scenes} scenes (seed {s.seed}, 0-{s.people_max} pedestrians) rendered by "
            "`perception/crowd/sim_scenes.py`: Open3D `RaycastingScene` ray casting of platforms, squares and "
            "sidewalks with buildings, trees, poles, benches and kiosks, pedestrians from "
            "`perception.sim.meshes.pedestrian_mesh` alone, in groups and in queues, a camera "
            f"{opts.cam_height[0]:g}-{opts.cam_height[1]:g} m up tilted {opts.pitch_deg[0]:g}-{opts.pitch_deg[1]:g} "
            f"degrees down, people within {opts.max_range:g} m, sun with shadow rays or overcast light, exposure, "
            "blur and noise; a head "
            "counts only when the ray to its centre hits that head first (occluded people are not labelled). "
            f"Used as: {'; '.join(use)}.", ""]


def runs_markdown(runs: list[dict]) -> str:
    """Markdown table of recipe-search runs: dicts with ``run``, ``recipe``, ``steps``, ``cpu_min``, ``val_mae``
    and optional ``cv_mae``, ``train_mae``, ``train_corr``, ``note``."""
    lines = ["| run | recipe | steps | CPU min | val MAE | CV MAE | train-image MAE (corr) | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        fit = f"{r['train_mae']:.2f} ({r['train_corr']:.2f})" if "train_mae" in r else "-"
        cv = f"{r['cv_mae']:.2f}" if r.get("cv_mae") is not None else "-"
        val = f"{r['val_mae']:.2f}" if r.get("val_mae") is not None else "-"
        lines.append(f"| {r['run']} | {r['recipe']} | {r['steps']} | {r['cpu_min']:.1f} | {val} | {cv} | "
                     f"{fit} | {r.get('note', '')} |")
    return "\n".join(lines)


def write_model_card(model_dir: str | Path, test_report: dict, val_report: dict | None = None,
                     ablation: list[dict] | None = None, speed: dict | list[dict] | None = None,
                     notes: list[str] | None = None, data_root: str | Path | None = None,
                     runs: list[dict] | None = None) -> Path:
    """Compose the card from ``training.json``, the config and the given measured reports."""
    model_dir = Path(model_dir)
    cfg = CrowdConfig.from_yaml(model_dir / "config.yaml")
    train = json.loads((model_dir / "training.json").read_text())
    params = count_parameters(CrowdNet(cfg.model))
    size_kb = (model_dir / WEIGHTS_FILE).stat().st_size / 1024
    split = train["split"]
    t = cfg.train
    out = [
        f"# Crowd counter `{model_dir.name}` ({cfg.model.name}, attention `{cfg.model.attention}`)", "",
        _architecture(cfg, params, size_kb), "",
        "## Data and split", "",
        f"`{cfg.data.root}`: 42 CityUHK-X-BEV views (`scene_0NN_{{1,2}}`, 512x384) and 8 hand-clicked street "
        "photos (`handclick_0N`, 1024x768, shrunk to 512x384). Split by scene (both views of a scene in one "
        "split), fixed in the config:", "",
        f"- train ({len(split['train'])}): {', '.join(split['train'])}",
        f"- val ({len(split['val'])}): {', '.join(split['val'])}",
        f"- test ({len(split['test'])}): {', '.join(split['test'])}", "",
        f"Targets: geometry-adaptive Gaussians (sigma = {cfg.data.sigma_beta} x mean distance to the "
        f"{cfg.data.knn} nearest heads, clipped to [{cfg.data.sigma_min}, {cfg.data.sigma_max}] px), each "
        "renormalised inside the image so a map sums to its head count. Augmentation: scale "
        f"[{t.scale_min}, {t.scale_max}], random {t.crop}x{t.crop} crops, horizontal flips, brightness/contrast/"
        f"saturation jitter +-{t.jitter}" + (" (crop stages); whole frames in the final stage." if t.whole_steps
                                             else "."), "",
        "## Simulated scenes", "",
        *_sim_text(cfg),
        "## Training", "",
        f"`perception train-crowd --config models/crowd_default.yaml --out {model_dir}`: AdamW lr {t.lr} "
        f"({t.warmup_steps}-step linear warm-up, then cosine to 0, in each stage), "
        + _steps_text(cfg, train) + f", seed {t.seed}, {t.threads} torch thread(s) on a "
        f"shared 2-core CPU: **{train['seconds'] / 60:.1f} min** wall clock"
        + (f" ({train['cpu_seconds'] / 60:.1f} min CPU)" if "cpu_seconds" in train else "")
        + f". Loss: {t.cell_loss_weight:g} x cell MSE + {t.count_loss_weight} x |crop count error| "
        "on the rectified density (ReLU in training as at inference, leaky gradient below zero). "
        + _selection_text(train, t)
        + (f" Whole-image MAE of the shipped weights on their own {len(split['train'])} training images: "
           f"{train['train_image_mae']:.2f} (correlation with the true counts {train['train_image_corr']:.2f})."
           if "train_image_mae" in train else "")
        + (f" Val MAE right after the simulated stage: {train['val_mae_after_sim']:.2f}."
           if train.get("val_mae_after_sim") is not None else ""), "",
        "## Results on the held-out test scenes", "",
        "`perception eval-crowd --model models/crowd_default --data ../shared/data/crowd_sample` "
        "(evaluates only the test split of the training source):", "",
        _metrics_table(test_report), "",
    ]
    if data_root is not None:
        base = constant_baseline(data_root, split)
        out += [f"Trivial baseline (always answer the mean training count, {base['constant']:.1f}): test MAE "
                f"{base['mae']:.2f}, RMSE {base['rmse']:.2f}.", ""]
    out += [_image_table(test_report), ""]
    if val_report is not None:
        use = ("used to select the weights and, with the training images, to fit the interval; its numbers are "
               "optimistic" if t.select_best and not t.whole_steps else
               "not used to select the weights, which come from a fixed schedule; it decided which whole-frame "
               "variants were cross-validated; used with the training images to fit the interval")
        out += [f"Validation split ({use}):", "",
                _metrics_table(val_report), ""]
    interval = json.loads((model_dir / "interval.json").read_text())
    out += [
        "## Count interval", "",
        f"count +- z sqrt(phi max(count, 1)) with z for {t.interval_level:.0%}; phi (over-dispersion) from "
        "split-conformal calibration of the normalised residuals |pred - gt| / sqrt(max(pred, 1)), the wider of "
        f"the fits on the {len(split['val'])} validation and the {len(split['train'])} training images ("
        + ("the weights were selected on the former; " if t.select_best and not t.whole_steps else "")
        + f"phi = {interval['phi']:.3f}). Empirical coverage on test: "
        f"**{test_report['coverage']:.0%}** (nominal {t.interval_level:.0%}).", "",
    ]
    if runs:
        out += ["## Recipe search", "",
                "Every run of the search that chose this recipe, on validation and training-image fit only (the test "
                "split was evaluated for the final candidate alone); CPU minutes on 1 thread of the shared CPU.", "",
                runs_markdown(runs), ""]
    if ablation:
        out += ["## Ablation: attention variants, and simulated scenes or not", "",
                f"The crop stages of a recipe shortened ({ablation[0]['sim_steps']} simulated + "
                f"{ablation[0]['steps']} real "
                "image steps, `python -m perception.crowd.ablation`; the final weight average is evaluated, no "
                "best-validation selection), same data and seed for every row; val = the 7 validation images, "
                "test = the 10 held-out ones. With so few images, differences of a few counts are within noise.",
                "",
                ablation_markdown(ablation), ""]
    if speed:
        speeds = speed if isinstance(speed, list) else [speed]
        out += ["## Speed", "", "`benchmarks/crowd_speed.py` (512x384, batch 1, this 2-core CPU; 1-minute load "
                "average before each run in brackets, other jobs share the CPU; CPU ms / image is the process "
                "CPU time per image, what one unshared core gives):", "",
                "| threads [load] | backend | images/s (wall) | p50 ms | CPU ms / image |", "|---|---|---|---|---|"]
        for sp in speeds:
            load = sp.get("load_avg_1min_before")
            where = f"{sp['threads']}" + (f" [{load:.1f}]" if load is not None else "")
            for name, key in (("PyTorch", "pytorch"), ("ONNX Runtime", "onnxruntime")):
                r = sp[key]
                cpu = f"{r['cpu_ms_per_image']:.1f}" if "cpu_ms_per_image" in r else "-"
                out.append(f"| {where} | {name} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | {cpu} |")
        out += [""]
    out += ["## Known limits", ""] + [f"- {n}" for n in (notes or [])] + [""]
    path = model_dir / "MODEL_CARD.md"
    path.write_text("\n".join(out))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m perception.crowd.model_card MODEL_DIR --test T.json [--val V.json --ablation A.json
    --speed S.json --notes N.txt]``."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("model_dir", type=Path)
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--val", type=Path)
    p.add_argument("--ablation", type=Path)
    p.add_argument("--speed", type=Path, nargs="+", help="one or more benchmarks/crowd_speed.py --json files")
    p.add_argument("--notes", type=Path, help="text file, one known limit per line")
    p.add_argument("--data", type=Path, help="training source, for the constant-count baseline")
    p.add_argument("--runs", type=Path, help="JSON list of recipe-search runs (see runs_markdown)")
    a = p.parse_args(argv)

    def load(path: Path | None):
        return json.loads(path.read_text()) if path else None

    speed = [load(p) for p in a.speed] if a.speed else None

    notes = [ln.strip() for ln in a.notes.read_text().splitlines() if ln.strip()] if a.notes else None
    print(write_model_card(a.model_dir, load(a.test), load(a.val), load(a.ablation), speed, notes,
                           a.data, load(a.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

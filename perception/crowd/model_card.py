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
    if kind.startswith("best_val"):
        return (f"Validation MAE of {ema} every {t.eval_every} steps; shipped: the weights at step "
                f"{train['best_step']}, best mean val MAE over the last {t.select_window} evaluation(s) "
                f"({train['best_val_mae']:.2f}; steps >= {t.select_after} only). Val MAE of the shipped weights "
                f"{train['final_val_mae']:.2f}. The 7-image val set is small, so this selection is noisy.")
    return (f"Shipped: the **final** {ema} (val MAE {train['final_val_mae']:.2f}; best smoothed val MAE during "
            f"training {train['best_val_mae']:.2f} at step {train['best_step']}).")


def constant_baseline(root: str | Path, split: dict[str, list[str]]) -> dict[str, float]:
    """MAE / RMSE on the test split of always answering the mean training count (the bar a model must beat)."""
    def counts(names: list[str]) -> np.ndarray:
        return np.array([len(json.loads((Path(root) / "points" / f"{n}.json").read_text())["points"])
                         for n in names], dtype=float)

    mean = float(counts(split["train"]).mean())
    err = counts(split["test"]) - mean
    return {"constant": mean, "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean()))}


def write_model_card(model_dir: str | Path, test_report: dict, val_report: dict | None = None,
                     ablation: list[dict] | None = None, speed: dict | list[dict] | None = None,
                     notes: list[str] | None = None, data_root: str | Path | None = None) -> Path:
    """Compose the card from ``training.json``, the config and the given measured reports."""
    model_dir = Path(model_dir)
    cfg = CrowdConfig.from_yaml(model_dir / "config.yaml")
    train = json.loads((model_dir / "training.json").read_text())
    params = count_parameters(CrowdNet(cfg.model))
    size_kb = (model_dir / WEIGHTS_FILE).stat().st_size / 1024
    split = train["split"]
    m, t = cfg.model, cfg.train
    out = [
        f"# Crowd counter `{model_dir.name}` ({m.name}, attention `{m.attention}`)", "",
        "Density-map people counter: compact CSRNet-style network (strided stem + 2 max-pools = stride 8, "
        f"front end {m.front_channels}, dilated (d={m.dilation}) back end {m.back_channels}, 1x1 density "
        f"head), parameter-free `{m.attention}` attention after each stage; {params} parameters, "
        f"`{WEIGHTS_FILE}` {size_kb:.0f} KiB. Trained from scratch (no pre-training). "
        f"Input: RGB resized so the longer side is at most {m.max_side} px; output: density at stride 8, "
        "count = its sum.", "",
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
        f"saturation jitter +-{t.jitter}.", "",
        "## Training", "",
        f"`perception train-crowd --config models/crowd_default.yaml --out {model_dir}`: AdamW lr {t.lr} "
        f"({t.warmup_steps}-step linear warm-up, then cosine to 0), {train['steps']} steps of batch "
        f"{t.batch_size}, seed {t.seed}, {t.threads} torch thread(s) on a shared 2-core CPU: "
        f"**{train['seconds'] / 60:.1f} min**. Loss: 64 x cell MSE + {t.count_loss_weight} x |crop count error| "
        "on the rectified density (ReLU in training as at inference, leaky gradient below zero). "
        + _selection_text(train, t) + "", "",
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
        out += ["Validation split (used to select the weights and, with the training images, to fit the interval; "
                "its numbers are optimistic):", "",
                _metrics_table(val_report), ""]
    interval = json.loads((model_dir / "interval.json").read_text())
    out += [
        "## Count interval", "",
        f"count +- z sqrt(phi max(count, 1)) with z for {t.interval_level:.0%}, phi (over-dispersion): the "
        f"wider of the fits on the validation and on the training residuals (phi = {interval['phi']:.3f}, "
        f"{interval.get('fitted_on', 0)} images). Empirical coverage on test: **{test_report['coverage']:.0%}** "
        f"(nominal {t.interval_level:.0%}).", "",
    ]
    if ablation:
        out += ["## Attention ablation", "",
                f"Same data, seed and short schedule ({ablation[0]['steps']} steps, smaller batch/crop than the "
                "shipped run); test split. With 10 test images, differences of a few counts are within noise.", "",
                ablation_markdown(ablation), ""]
    if speed:
        speeds = speed if isinstance(speed, list) else [speed]
        out += ["## Speed", "", "`benchmarks/crowd_speed.py` (512x384, batch 1, this 2-core CPU; 1-minute load "
                "average before each run in brackets, other jobs share the CPU):", ""]
        for sp in speeds:
            load = sp.get("load_avg_1min_before")
            where = f"{sp['threads']} thread(s)" + (f" [load {load:.1f}]" if load is not None else "")
            out += [f"- {where}: PyTorch {sp['pytorch']['images_per_s']:.1f} images/s (p50 "
                    f"{sp['pytorch']['p50_ms']:.1f} ms), ONNX Runtime {sp['onnxruntime']['images_per_s']:.1f} "
                    f"images/s (p50 {sp['onnxruntime']['p50_ms']:.1f} ms)"]
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
    a = p.parse_args(argv)

    def load(path: Path | None):
        return json.loads(path.read_text()) if path else None

    speed = [load(p) for p in a.speed] if a.speed else None

    notes = [ln.strip() for ln in a.notes.read_text().splitlines() if ln.strip()] if a.notes else None
    print(write_model_card(a.model_dir, load(a.test), load(a.val), load(a.ablation), speed, notes,
                           a.data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

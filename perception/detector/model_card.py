"""MODEL_CARD.md for a trained detector: data, training, metrics, calibration, known limits."""

from __future__ import annotations

import json
from pathlib import Path

from perception.detector.config import DetectorConfig, TrainConfig


def _fmt(v: object) -> str:
    return "n/a" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def _recipe(t: TrainConfig) -> str:
    """The second-stage and robustness parts of the recipe, as sentences (empty when none is used)."""
    parts = []
    if t.init_from:
        parts.append(f"Stage 2: starts from the weights of `{t.init_from}` (see its model card for stage 1)"
                     + (f", {t.max_steps} steps" if t.max_steps else ""))
    if t.corruption_augment > 0:
        names = ", ".join(t.corruption_augment_names) or "every corruption a cached sample can take"
        parts.append(f"robustness training: {t.corruption_augment:.0%} of the samples under one random corruption "
                     f"of `perception.robustness` at severity 1-3 ({names})")
    if t.object_rotation > 0 or t.object_point_drop > 0:
        parts.append(f"per-object rotation U(±{t.object_rotation} rad) and point drop (up to "
                     f"{t.object_point_drop:.0%})")
    if t.z_shift_std > 0:
        parts.append(f"the whole scene shifted vertically, N(0, {t.z_shift_std} m)")
    if t.yaw_loss != "sincos_l1":
        parts.append(f"heading loss `{t.yaw_loss}`")
    if t.real_share > 0:
        parts.append(f"labelled real frames from {', '.join(t.real_data)} in {t.real_share:.0%} of the batch slots")
    return ("\n" + "; ".join(parts) + ".") if parts else ""


#: Hand-written sections appended to the generated card (ablations, studies run after training).
CARD_NOTES_FILE = "card_notes.md"


def write_model_card(model_dir: Path, cfg: DetectorConfig, train_state: dict, metrics: dict,
                     calibration: dict, extra: dict | None = None) -> Path:
    """Write ``MODEL_CARD.md``."""
    t = cfg.train
    weights = model_dir / "weights.safetensors"
    size_mb = weights.stat().st_size / 1e6 if weights.exists() else float("nan")
    classes = cfg.model.classes
    rows = "\n".join(
        f"| {c} | {_fmt(metrics['ap3d'].get(c))} | {_fmt(metrics['apbev'].get(c))} | "
        f"{_fmt(metrics.get('ap3d_lidar_only', {}).get(c))} |" for c in classes)
    lat = metrics.get("latency_ms", {})
    stages = lat.get("torch_stages", {})
    recipe = _recipe(t)
    data_kind = "Simulated drives only" if t.real_share <= 0 else "Simulated drives and labelled real frames (below)"
    card = f"""# {cfg.model.name} — LiDAR–camera fusion detector

Trained by `perception train --config models/{cfg.model.name}.yaml` (this folder is its output; the
resolved config is `config.yaml`). Weights: `weights.safetensors` ({size_mb:.1f} MB), calibration:
`calibration.json`, sha256 of every file: `manifest.json`.

## Data
{data_kind} (`perception.sim`, rig `calibration/sim_default.yaml`, HDL-64E-like LiDAR and a
1242×375 camera): {t.train_frames} training frames (split `train`, seed {t.seed}, {t.frames_per_drive} frames per
drive), {t.val_frames} validation frames, calibration fitted on {t.calib_frames} frames of split `calib`, metrics
on {t.test_frames} held-out frames of split `test` (seeds disjoint from training). Classes: {", ".join(classes)}.
Augmentation: flip (image mirrored), rotation ±15°, scale ±5 %; camera dropped on {t.camera_dropout:.0%} of
samples and LiDAR tokens hidden from the fusion layer on {t.lidar_dropout:.0%} (masked-modality training).{recipe}

## Training
{train_state.get('steps')} steps of batch {t.batch_size} ({train_state.get('epochs_done', 0):.1f} epochs) in
{train_state.get('wall_seconds', 0) / 60:.1f} min on this 2-core CPU (time limit {t.time_limit_minutes:.0f} min),
AdamW lr {t.lr} one-cycle; final training loss {_fmt(train_state.get('final_loss'))}, validation loss
{_fmt(train_state.get('val_loss'))}.

## Metrics on `{metrics.get('data')}` ({metrics.get('frames')} frames, difficulty {metrics.get('difficulty')})
KITTI devkit AP_R40 in percent, IoU 0.7 Car, 0.5 Pedestrian, 0.5 Cyclist.

| class | 3D AP | BEV AP | 3D AP, camera removed |
|---|---|---|---|
{rows}

LiDAR-only keeps {_fmt(metrics.get('lidar_only_car_retention'))} of the Car 3D AP.

## Calibration
A detection counts as correct when it matches an unmatched box of its class with 3D IoU ≥ 0.5 (Car) or
0.25 (Pedestrian, Cyclist). Per-class temperature and bias on the class logit, per-parameter variance
scales, fitted on split `calib`:

- detection ECE (10 bins): {_fmt(metrics.get('dece_before'))} raw → {_fmt(metrics.get('dece_after'))} calibrated
- share of box parameters (x y z l w h yaw) of correct detections inside the predicted 1σ / 2σ
  interval: {_fmt(metrics.get('coverage_1sigma'))} / {_fmt(metrics.get('coverage_2sigma'))}
  (per parameter: {json.dumps(metrics.get('coverage_per_param', {}))})
- temperatures {json.dumps({k: round(v, 3) for k, v in calibration.get('temperature', {}).items()})}, biases
  {json.dumps({k: round(v, 3) for k, v in calibration.get('bias', {}).items()})}, variance scales
  {[round(v, 3) for v in calibration.get('variance_scale', [])]}

## Latency at training time (PyTorch eager, 2 CPU threads, ms p50/p99)
Measured when these weights were trained; for the exported engines and the code as it is now, run
`perception bench --model <dir> --rounds 3` (its results are kept in `engines.json`).
{", ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in lat.items() if isinstance(v, dict) and 'p50' in v)}
Stages: {", ".join(f"{k} {v}" for k, v in stages.items())}

## Known limits
- Trained on simulation only (no labelled real frame); see the project README for the measured sim-to-real
  gap on real KITTI frames and what in the simulator would close it.
- Front field only (x 0–69 m, |y| < 39.7 m); objects outside it are not detected.
- Uncertainty is heteroscedastic per parameter (diagonal covariance); correlations are not modelled.
"""
    if extra:
        card += "\n## Further results\n" + "\n".join(f"- {k}: {v}" for k, v in extra.items()) + "\n"
    notes = model_dir / CARD_NOTES_FILE
    if notes.is_file():  # what was measured after training (ablations, robustness), kept across regenerations
        card += "\n" + notes.read_text()
    path = model_dir / "MODEL_CARD.md"
    path.write_text(card)
    return path

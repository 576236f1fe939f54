"""Training loop: seeded, tqdm progress, periodic checkpoints, resumable, time-limited."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from perception.detector.checkpoint import load_model
from perception.detector.config import DetectorConfig
from perception.detector.data import SampleDataset, build_cache
from perception.detector.inputs import collate
from perception.detector.loss import detection_loss
from perception.detector.model import FusionNet
from perception.detector.real_data import load_real_frames, write_real_samples
from perception.errors import DataError
from perception.frame import Frame
from perception.rig import Rig

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RIG = REPO / "calibration" / "sim_default.yaml"


@dataclass
class TrainState:
    """What a finished (or time-limited) run reports."""

    steps: int
    epochs_done: float
    wall_seconds: float
    final_loss: float
    val_loss: float


def cache_dir(cfg: DetectorConfig, split: str) -> Path:
    """Where the simulated samples of ``split`` are cached (git-ignored ``data/``)."""
    t = cfg.train
    n = {"train": t.train_frames, "val": t.val_frames}[split]
    return REPO / "data" / "cache" / cfg.model.name / f"{split}_s{t.seed}_n{n}"


def _batches(dataset: SampleDataset, order: np.ndarray, bs: int):
    for i in range(0, len(order) - bs + 1, bs):
        items = [dataset[int(j)] for j in order[i:i + bs]]
        yield items


def _step_inputs(items, cfg: DetectorConfig, rng: np.random.Generator, train: bool):
    inputs = [it[0] for it in items]
    bev_valid = []
    for inp in inputs:
        drop_cam = train and rng.random() < cfg.train.camera_dropout
        drop_bev = train and not drop_cam and inp.camera_valid and rng.random() < cfg.train.lidar_dropout
        if drop_cam:
            inp.camera_valid = False
            inp.image = np.zeros_like(inp.image)
        bev_valid.append(not drop_bev)
    kwargs = collate(inputs, bev_valid)
    heat = torch.from_numpy(np.stack([it[1] for it in items]))
    boxes = [torch.from_numpy(it[2]).float() for it in items]
    labels = [torch.from_numpy(it[3]).long() for it in items]
    return kwargs, heat, boxes, labels


def train_step(net: FusionNet, opt: torch.optim.Optimizer, items, cfg: DetectorConfig,
               rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One optimiser step on a batch of samples (augmented, loss, clipped gradients); returns the losses."""
    kwargs, heat, boxes, labels = _step_inputs(items, cfg, rng, train=True)
    losses = detection_loss(net(**kwargs), heat, boxes, labels, cfg.model, cfg.train.yaw_loss)
    opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
    opt.step()
    return losses


def evaluate_loss(net: FusionNet, dataset: SampleDataset, cfg: DetectorConfig, max_batches: int = 25) -> float:
    """Mean validation loss (no augmentation, full inputs)."""
    net.eval()
    rng = np.random.default_rng(0)
    total, n = 0.0, 0
    with torch.no_grad():
        for items in _batches(dataset, np.arange(len(dataset)), cfg.train.batch_size):
            kwargs, heat, boxes, labels = _step_inputs(items, cfg, rng, train=False)
            total += float(detection_loss(net(**kwargs), heat, boxes, labels, cfg.model, cfg.train.yaw_loss)["total"])
            n += 1
            if n >= max_batches:
                break
    net.train()
    return total / max(n, 1)


def train(cfg: DetectorConfig, out_dir: Path, rig: Rig | None = None,
          real_frames: list[Frame] | None = None) -> tuple[FusionNet, TrainState]:
    """Train (or resume) the detector; checkpoints go to ``out_dir/checkpoints/last.pt``.

    With ``train.init_from`` the weights start from that model folder; with ``train.real_share > 0`` each batch
    slot holds a labelled real frame with that probability (``real_frames``, default: ``train.real_data``).
    """
    t = cfg.train
    torch.set_num_threads(t.num_threads)
    torch.manual_seed(t.seed)
    rig = rig or Rig.from_yaml(DEFAULT_RIG)
    train_paths = build_cache(cache_dir(cfg, "train"), rig, "train", t.train_frames, t.seed, cfg.model,
                              t.frames_per_drive)
    val_paths = build_cache(cache_dir(cfg, "val"), rig, "val", t.val_frames, t.seed, cfg.model, t.frames_per_drive)
    names: tuple[str, ...] = ()
    if t.corruption_augment > 0:
        from perception.detector.corruption_augment import check_names

        names = check_names(t.corruption_augment_names)
    train_ds = SampleDataset(train_paths, cfg.model, train=True, seed=t.seed, corruption_share=t.corruption_augment,
                             object_rotation=t.object_rotation, object_point_drop=t.object_point_drop,
                             corruption_names=names, z_shift_std=t.z_shift_std)
    val_ds = SampleDataset(val_paths, cfg.model, train=False)
    real_tmp, real_ds = None, None
    if t.real_share > 0:
        frames = real_frames if real_frames is not None else load_real_frames(t.real_data)
        if not frames:
            raise DataError("train.real_share > 0 but no labelled real frames", "train.real_data")
        real_tmp = tempfile.TemporaryDirectory(prefix="real_samples_")
        real_ds = SampleDataset(write_real_samples(frames, cfg.model, Path(real_tmp.name)), cfg.model, train=True,
                                seed=t.seed + 1, object_rotation=t.object_rotation,
                                object_point_drop=t.object_point_drop, z_shift_std=t.z_shift_std)
        log.info("mixing %d labelled real frames into %.0f %% of the batch slots", len(frames), 100 * t.real_share)

    net = FusionNet(cfg.model)
    if t.init_from:
        net.load_state_dict(load_model(REPO / t.init_from)[0].state_dict())
        log.info("weights initialised from %s", t.init_from)
    opt = torch.optim.AdamW(net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    steps_per_epoch = len(train_ds) // t.batch_size
    total_steps = t.max_steps or steps_per_epoch * t.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=total_steps, pct_start=0.1,
                                                div_factor=10.0, final_div_factor=50.0)
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    step, elapsed = 0, 0.0
    rng = np.random.default_rng(t.seed)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)  # our own checkpoint, written below
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        step, elapsed = ckpt["step"], ckpt["elapsed"]
        rng.bit_generator.state = ckpt["rng"]
        train_ds.rng.bit_generator.state = ckpt["data_rng"]
        if real_ds is not None and "real_rng" in ckpt:
            real_ds.rng.bit_generator.state = ckpt["real_rng"]
        log.info("resumed from %s at step %d (%.1f min trained)", ckpt_path, step, elapsed / 60)

    def save() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "step": step, "elapsed": elapsed, "rng": rng.bit_generator.state,
                    "data_rng": train_ds.rng.bit_generator.state,
                    "real_rng": None if real_ds is None else real_ds.rng.bit_generator.state}, tmp)
        tmp.replace(ckpt_path)

    net.train()
    limit = t.time_limit_minutes * 60
    t0 = time.monotonic() - elapsed
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step")
    last_loss, smooth = float("nan"), None
    stop = False
    while step < total_steps and not stop:
        epoch = step // steps_per_epoch
        order = np.random.default_rng(t.seed + epoch).permutation(len(train_ds))
        start = (step % steps_per_epoch) * t.batch_size
        for items in _batches(train_ds, order[start:], t.batch_size):
            if real_ds is not None:
                items = [real_ds[int(rng.integers(len(real_ds)))] if rng.random() < t.real_share else it
                         for it in items]
            losses = train_step(net, opt, items, cfg, rng)
            sched.step()
            step += 1
            last_loss = float(losses["total"].detach())
            smooth = last_loss if smooth is None else 0.98 * smooth + 0.02 * last_loss
            elapsed = time.monotonic() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{smooth:.3f}", hm=f"{float(losses['heatmap'].detach()):.2f}",
                            reg=f"{float(losses['reg1'].detach()):.2f}", min=f"{elapsed / 60:.1f}")
            if step % t.checkpoint_every_steps == 0:
                save()
            if elapsed > limit:
                log.warning("time limit of %.0f min reached at step %d/%d", t.time_limit_minutes, step, total_steps)
                stop = True
                break
            if step >= total_steps:
                break
    bar.close()
    save()
    if real_tmp is not None:
        real_tmp.cleanup()
    val_loss = evaluate_loss(net, val_ds, cfg)
    net.eval()
    state = TrainState(step, step / max(steps_per_epoch, 1), elapsed, smooth or last_loss, val_loss)
    log.info("training done: %s", state)
    return net, state

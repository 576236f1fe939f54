"""Seeded, resumable training of the crowd counter: ImageNet-pretrained front end, random crops drawn from the
training datasets in turn (dataset-balanced), EMA weights shipped, count interval fitted on validation."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from perception.crowd.bayesian import bayesian_loss
from perception.crowd.checkpoint import load_training_state, save_crowd_model, save_training_state
from perception.crowd.config import CrowdConfig, CrowdTrainConfig
from perception.crowd.data import Augmenter, CrowdSample, load_datasets, whole_frame
from perception.crowd.evaluate import evaluate_samples
from perception.crowd.interval import CountInterval, fit_balanced_interval
from perception.crowd.model import STRIDE, CrowdNet, train_mode
from perception.crowd.predict import predict_density
from perception.crowd.pretrained import load_mobilenet_v2
from perception.errors import ConfigError, DataError, ModelError

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "training.json"


def evaluate_counts(net: CrowdNet, samples: list[CrowdSample]) -> tuple[list[float], list[float]]:
    """(predicted counts, true counts) over whole images; restores the net's train/eval mode."""
    was_training = net.training
    net.eval()
    preds = [float(predict_density(net, s.image).sum()) for s in samples]
    if was_training:
        train_mode(net)
    return preds, [float(s.count) for s in samples]


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Multiplier of the base learning rate: linear warm-up over ``warmup`` steps (capped at half the run),
    then cosine decay to 0 at ``steps``."""
    warmup = min(warmup, steps // 2)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    t = (min(step, steps) - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * t))


def schedule_factor(step: int, tc: CrowdTrainConfig) -> float:
    """Multiplier of the base learning rates at ``step``: :func:`lr_factor` over the crop stage, then
    ``whole_lr / lr``, constant or (``whole_schedule`` cosine) shaped by :func:`lr_factor` over the whole-frame
    stage (with the warm-up only when there is no crop stage)."""
    if step < tc.steps:
        return lr_factor(step, tc.steps, tc.warmup_steps)
    base = tc.whole_lr / tc.lr
    if tc.whole_schedule == "constant":
        return base
    return base * lr_factor(step - tc.steps, tc.whole_steps, tc.warmup_steps if tc.steps == 0 else 0)


@torch.no_grad()
def ema_update(ema: CrowdNet, net: CrowdNet, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * net`` for parameters and float buffers; integer buffers are copied."""
    ema_state = ema.state_dict()
    for k, v in net.state_dict().items():
        if v.dtype.is_floating_point:
            ema_state[k].mul_(decay).add_(v.detach(), alpha=1.0 - decay)
        else:
            ema_state[k].copy_(v)


def density_loss(pred: torch.Tensor, target: torch.Tensor, cell_weight: float, count_weight: float) -> torch.Tensor:
    """``cell_weight`` x mean squared cell error + ``count_weight`` x mean |count error| per crop."""
    return cell_weight * torch.mean((pred - target) ** 2) + count_weight * torch.mean(
        torch.abs(pred.sum(dim=(1, 2, 3)) - target.sum(dim=(1, 2, 3))))


def build_net(cfg: CrowdConfig) -> CrowdNet:
    """A fresh network, its front end initialised from the pinned ImageNet weights when ``model.pretrained``,
    the first ``model.freeze_blocks`` backbone modules frozen."""
    net = CrowdNet(cfg.model)
    if cfg.model.pretrained:
        log.info("front end: %d tensors from the ImageNet MobileNetV2", net.load_pretrained(load_mobilenet_v2()))
    net.freeze(cfg.model.freeze_blocks)
    return net


def make_optimizer(net: CrowdNet, cfg: CrowdConfig) -> torch.optim.Optimizer:
    """AdamW with two groups: trainable backbone blocks at ``backbone_lr``, the rest at ``lr``."""
    tc = cfg.train
    backbone = {id(p) for m in net.backbone_modules() for p in m.parameters()}
    groups = [{"params": [p for p in net.parameters() if p.requires_grad and id(p) in backbone],
               "lr": tc.backbone_lr, "initial_lr": tc.backbone_lr},
              {"params": [p for p in net.parameters() if p.requires_grad and id(p) not in backbone],
               "lr": tc.lr, "initial_lr": tc.lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=tc.weight_decay)


def balanced_batch(train: dict[str, list[CrowdSample]], step: int, batch: int,
                   rng: np.random.Generator) -> list[CrowdSample]:
    """``batch`` samples: datasets in turn (continuing across steps), a random image of each."""
    names = sorted(n for n, v in train.items() if v)
    out = []
    for i in range(batch):
        pool = train[names[(step * batch + i) % len(names)]]
        out.append(pool[int(rng.integers(0, len(pool)))])
    return out


#: ``train`` keys of the whole-frame stage: a checkpoint of the crop stage resumes under a config that differs
#: only in these (the stage is added to, or changed on, a run whose crop stage is done).
WHOLE_KEYS = ("whole_steps", "whole_lr", "whole_schedule", "whole_scale", "whole_loss", "bayes_sigma",
              "bayes_background")


def resumable(saved: dict, cfg: CrowdConfig, step: int) -> bool:
    """True when a checkpoint written at ``step`` under config ``saved`` (a ``to_dict``) can go on under ``cfg``:
    the same config, or one differing only in :data:`WHOLE_KEYS` while the checkpoint is not past the crop
    stage."""
    now = cfg.to_dict()
    try:  # a checkpoint from before a config key was added reads with that key's default
        saved = CrowdConfig.from_dict(saved, "checkpoint").to_dict()
    except (ConfigError, TypeError):
        return False
    if saved == now:
        return True
    strip = [{**d, "train": {k: v for k, v in d["train"].items() if k not in WHOLE_KEYS}} for d in (saved, now)]
    return strip[0] == strip[1] and step <= cfg.train.steps


def whole_frame_loss(net: CrowdNet, frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     cfg: CrowdConfig) -> torch.Tensor:
    """Mean loss over whole frames (image, density target, head points; one forward pass per frame size). With
    ``whole_loss`` density the cell term has the crop stage's weight per cell, so it is the sum of squared cell
    errors over the frame when ``cell_loss_weight`` = (crop / 8)^2; with bayesian it is :func:`bayesian_loss`."""
    tc = cfg.train
    per_cell = tc.cell_loss_weight / (tc.crop / 8) ** 2
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (img, _, _) in enumerate(frames):
        groups.setdefault(img.shape, []).append(i)
    total = torch.zeros(())
    for idx in groups.values():
        pred = net(torch.from_numpy(np.stack([frames[i][0] for i in idx])))
        if tc.whole_loss == "bayesian":
            for k, i in enumerate(idx):
                total = total + bayesian_loss(pred[k, 0], frames[i][2], STRIDE, tc.bayes_sigma,
                                              tc.bayes_background) / len(frames)
            continue
        y = torch.from_numpy(np.stack([frames[i][1] for i in idx]))[:, None]
        cells = y.shape[2] * y.shape[3]
        total = total + density_loss(pred, y, per_cell * cells, tc.count_loss_weight) * (len(idx) / len(frames))
    return total


def train_crowd(cfg: CrowdConfig, out_dir: str | Path, resume: bool = True, progress: bool = True) -> dict:
    """Train for ``train.steps`` steps (resuming from ``<out_dir>/checkpoint.pt``), ship the EMA weights (the final
    ones with ``ema_decay`` 0), fit the interval on validation and save the model directory. Returns a summary
    (also written to ``training.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    t_load = time.time()
    data = load_datasets(cfg.data, cfg.model.max_side)
    train = {k: v["train"] for k, v in data.items()}
    val = [s for v in data.values() for s in v["val"]]
    if not any(train.values()) or not val:
        raise DataError("need training and validation images", str(list(cfg.data.datasets.values())))
    log.info("loaded %d train / %d val images in %.0f s", sum(map(len, train.values())), len(val),
             time.time() - t_load)
    net = build_net(cfg)
    ema = copy.deepcopy(net) if tc.ema_decay > 0 else None
    opt = make_optimizer(net, cfg)
    aug = Augmenter(cfg.data, tc.crop, tc.scale_min, tc.scale_max, tc.jitter, tc.grey_prob)
    ckpt = out_dir / CHECKPOINT_FILE
    step, elapsed, cpu_used, history = 0, 0.0, 0.0, []
    loss_sum, loss_n = 0.0, 0
    if resume and ckpt.is_file():
        state = load_training_state(ckpt)
        if not resumable(state["extra"].get("config"), cfg, int(state["step"])):
            raise ModelError("checkpoint was written with another config; train afresh (--fresh) or elsewhere",
                             str(ckpt))
        try:
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["opt"])
            if ema is not None:
                ema.load_state_dict(state["extra"]["ema"])
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"checkpoint does not match the model: {str(exc).splitlines()[0]}", str(ckpt)) from exc
        step, extra = int(state["step"]), state["extra"]
        rng.bit_generator.state = extra["np_rng"]
        torch.set_rng_state(extra["torch_rng"])
        history, elapsed, cpu_used = extra["history"], float(extra["seconds"]), float(extra["cpu_seconds"])
        loss_sum, loss_n = float(extra["loss_sum"]), int(extra["loss_n"])
        log.info("resumed from %s at step %d", ckpt, step)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule_factor(s, tc), last_epoch=step - 1)
    shipped = ema if ema is not None else net
    train_mode(net)
    start, cpu_start = time.time() - elapsed, time.process_time() - cpu_used
    total = tc.steps + tc.whole_steps
    n_ds = sum(1 for v in train.values() if v)
    bar = tqdm(total=total, initial=step, desc="train-crowd", disable=not progress)
    while step < total:
        if step < tc.steps:
            pairs = [aug(s, rng) for s in balanced_batch(train, step, tc.batch_size, rng)]
            x = torch.from_numpy(np.stack([p[0] for p in pairs]))
            y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
            loss = density_loss(net(x), y, tc.cell_loss_weight, tc.count_loss_weight)
        else:  # whole frames, one of each dataset
            frames = balanced_batch(train, step, n_ds, rng)
            loss = whole_frame_loss(net, [whole_frame(s, cfg.data, tc.jitter, tc.grey_prob, rng, tc.whole_scale)
                                           for s in frames],
                                    cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if ema is not None:
            ema_update(ema, net, min(tc.ema_decay, (1.0 + step) / (10.0 + step)))
        loss_sum, loss_n = loss_sum + float(loss.detach()), loss_n + 1
        bar.update(1)
        if step % tc.eval_every == 0 or step in (tc.steps, total):
            preds, truths = evaluate_counts(shipped, val)
            per = {ds: float(np.mean([abs(p - t) for p, t, s in zip(preds, truths, val) if s.dataset == ds]))
                   for ds in data if data[ds]["val"]}
            history.append({"step": step, "loss": loss_sum / max(loss_n, 1), "val_mae": per,
                            "seconds": time.time() - start})
            loss_sum, loss_n = 0.0, 0
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", **{k: f"{v:.2f}" for k, v in per.items()})
            log.info("step %d: loss %.4f, val MAE %s", step, history[-1]["loss"],
                     ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
        if step % tc.checkpoint_every == 0 or step in (tc.steps, total):
            save_training_state(ckpt, net, opt, step, {
                "config": cfg.to_dict(), "cpu_seconds": time.process_time() - cpu_start,
                "np_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "history": history,
                "seconds": time.time() - start, "loss_sum": loss_sum, "loss_n": loss_n,
                "ema": ema.state_dict() if ema is not None else None})
    bar.close()
    seconds, cpu_seconds = time.time() - start, time.process_time() - cpu_start
    shipped.eval()
    interval, val_report, power_table = fit_validation_interval(shipped, val, tc.interval_level)
    save_crowd_model(shipped, cfg, out_dir, interval)
    summary = {"steps": step, "seconds": seconds, "cpu_seconds": cpu_seconds, "threads": tc.threads,
               "shipped": "ema" if ema is not None else "final", "interval": interval.__dict__,
               "interval_power_cross_fitted_coverage": {str(k): v for k, v in power_table.items()},
               "val": {k: v for k, v in val_report.items() if k != "images"}, "val_images": val_report["images"],
               "history": history,
               "split": {ds: {k: [s.name for s in v] for k, v in parts.items()} for ds, parts in data.items()}}
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def fit_validation_interval(net: CrowdNet, val: list[CrowdSample],
                            level: float) -> tuple[CountInterval, dict, dict]:
    """Conformal interval on the validation images (power chosen by cross-fitted per-dataset coverage); returns
    (interval, validation report with cross-fitted coverage per dataset, {power: per-dataset coverage})."""
    preds, truths = evaluate_counts(net, val)
    groups = [s.source for s in val]
    interval, table = fit_balanced_interval(preds, truths, groups, level)
    report = evaluate_samples(net, interval, val)
    for ds, cov in table[interval.power].items():
        report["per_source"][ds]["coverage_cross_fitted"] = cov
    return interval, report, table

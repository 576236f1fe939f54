"""Seeded, resumable training of the crowd counter on the fixed by-scene split."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from perception.crowd.checkpoint import load_training_state, save_crowd_model, save_training_state
from perception.crowd.config import CrowdConfig
from perception.crowd.data import Augmenter, CrowdSample, load_split
from perception.crowd.interval import fit_interval
from perception.crowd.model import CrowdNet
from perception.crowd.predict import predict_density

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "training.json"


def evaluate_counts(net: CrowdNet, samples: list[CrowdSample]) -> tuple[list[float], list[float]]:
    """(predicted counts, true counts) over whole images; restores the net's train/eval mode."""
    was_training = net.training
    net.eval()
    preds = [float(predict_density(net, s.image).sum()) for s in samples]
    net.train(was_training)
    return preds, [float(s.count) for s in samples]


def _mae(preds: list[float], truths: list[float]) -> float:
    return float(np.mean(np.abs(np.subtract(preds, truths)))) if preds else float("nan")


def train_crowd(cfg: CrowdConfig, out_dir: str | Path, resume: bool = True, progress: bool = True) -> dict:
    """Train, keep the final weights (or, with ``train.select_best``, those with the best validation MAE), fit
    the interval on validation and save the model directory. Returns a summary (also in ``training.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    split = load_split(cfg.data, cfg.model.max_side)
    if not split["train"] or not split["val"]:
        raise ValueError("need training and validation images")
    net = CrowdNet(cfg.model)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    aug = Augmenter(cfg.data, tc.crop, tc.scale_min, tc.scale_max, tc.jitter)
    ckpt = out_dir / CHECKPOINT_FILE
    step, elapsed = 0, 0.0
    best = {"mae": math.inf, "step": 0, "state": None}
    history: list[dict] = []
    if resume and ckpt.is_file():
        state = load_training_state(ckpt)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        extra = state["extra"]
        rng.bit_generator.state = extra["np_rng"]
        torch.set_rng_state(extra["torch_rng"])
        best = extra["best"]
        history = extra["history"]
        elapsed = float(extra.get("seconds", 0.0))
        log.info("resumed from %s at step %d", ckpt, step)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, tc.steps) / tc.steps)), last_epoch=step - 1)
    net.train()
    start = time.time() - elapsed
    train = split["train"]
    bar = tqdm(total=tc.steps, initial=step, desc="train-crowd", disable=not progress)
    while step < tc.steps:
        idx = rng.integers(0, len(train), size=tc.batch_size)
        pairs = [aug(train[i], rng) for i in idx]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
        pred = net(x)
        # cell MSE (x64 so its scale matches one pixel's) + a small per-crop count L1 term
        loss = 64.0 * torch.mean((pred - y) ** 2) + tc.count_loss_weight * torch.mean(
            torch.abs(pred.sum(dim=(1, 2, 3)) - y.sum(dim=(1, 2, 3))))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        if step % tc.eval_every == 0 or step == tc.steps:
            val_mae = _mae(*evaluate_counts(net, split["val"]))
            history.append({"step": step, "loss": float(loss.detach()), "val_mae": val_mae})
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", val_mae=f"{val_mae:.2f}")
            if val_mae < best["mae"]:
                best = {"mae": val_mae, "step": step,
                        "state": {k: v.detach().clone() for k, v in net.state_dict().items()}}
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            save_training_state(ckpt, net, opt, step, {
                "np_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "best": best,
                "history": history, "seconds": time.time() - start})
    bar.close()
    seconds = time.time() - start
    if tc.select_best and best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()
    preds, truths = evaluate_counts(net, split["val"])
    interval = fit_interval(preds, truths, tc.interval_level)
    save_crowd_model(net, cfg, out_dir, interval)
    final_val_mae = _mae(preds, truths)
    summary = {"steps": step, "seconds": seconds, "best_step": best["step"], "best_val_mae": best["mae"],
               "final_val_mae": final_val_mae, "shipped": "best_val" if tc.select_best else "final",
            "interval_phi": interval.phi, "history": history,
            "split": {k: [s.name for s in v] for k, v in split.items()}}
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary

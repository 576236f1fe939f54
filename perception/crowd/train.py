"""Seeded, resumable training of the crowd counter: optional pre-training on simulated crowd scenes, then the
real training images of the fixed by-scene split (optionally mixed with simulated ones)."""

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

from perception.crowd.checkpoint import load_training_state, save_crowd_model, save_training_state
from perception.crowd.config import CrowdConfig
from perception.crowd.data import Augmenter, CrowdSample, WholeFrameAugmenter, load_split
from perception.crowd.interval import fit_interval, wider
from perception.crowd.model import CrowdNet
from perception.crowd.predict import pad_to_stride, predict_density
from perception.errors import ConfigError, DataError, ModelError

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


@torch.no_grad()
def recalibrate_batchnorm(net: CrowdNet, samples: list[CrowdSample]) -> None:
    """Replace the BatchNorm running statistics (an average over recent training crops, lagging behind the
    weights) by the exact statistics of whole ``samples`` images and their mirror images, as inference sees them."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not norms or not samples:
        return
    was_training = net.training
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every forward pass below
    net.train()
    for s in samples:
        x = torch.from_numpy(np.ascontiguousarray(pad_to_stride(s.image).transpose(2, 0, 1)))[None].float()
        net(x)
        net(torch.flip(x, dims=[3]))
    for m, mom in zip(norms, saved):
        m.momentum = mom
    net.train(was_training)


def _mae(preds: list[float], truths: list[float]) -> float:
    return float(np.mean(np.abs(np.subtract(preds, truths)))) if preds else float("nan")


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Multiplier of the base learning rate: linear warm-up over ``warmup`` steps (capped at half the run),
    then cosine decay to 0 at ``steps``."""
    warmup = min(warmup, steps // 2)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    t = (min(step, steps) - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * t))


def stage_lr_factor(step: int, cfg: CrowdConfig) -> float:
    """Multiplier of ``train.lr`` at global ``step``: the simulated stage (``sim.steps``, at ``sim.lr``) and the
    real-image stage (``train.steps``) each get their own warm-up and cosine decay (:func:`lr_factor`)."""
    tc, sim = cfg.train, cfg.sim
    if step < sim.steps:
        return sim.lr / tc.lr * lr_factor(step, sim.steps, tc.warmup_steps)
    return lr_factor(step - sim.steps, tc.steps, tc.warmup_steps)


def load_sim_samples(cfg: CrowdConfig, progress: bool = True) -> list[CrowdSample]:
    """The simulated scenes of ``cfg.sim`` (rendered once, then read from ``sim.cache_dir``)."""
    from perception.crowd.sim_scenes import SimCrowdOptions, simulated_samples

    opts = SimCrowdOptions(people_max=cfg.sim.people_max)
    return simulated_samples(cfg.sim.scenes, cfg.sim.seed, opts, cfg.sim.cache_dir or None, progress=progress)


@torch.no_grad()
def ema_update(ema: CrowdNet, net: CrowdNet, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * net`` for parameters and float buffers (BN statistics); integer
    buffers are copied."""
    ema_state, state = ema.state_dict(), net.state_dict()
    for k, v in state.items():
        if v.dtype.is_floating_point:
            ema_state[k].mul_(decay).add_(v.detach(), alpha=1.0 - decay)
        else:
            ema_state[k].copy_(v)


#: ``train`` keys of the whole-frame stage: a finished crop-stage checkpoint resumes under a config that differs
#: only in these (the whole-frame stage is added to, or changed on, a finished run).
WHOLE_KEYS = ("whole_steps", "whole_batch_size", "whole_lr", "whole_warmup_steps", "whole_scale_max",
              "whole_count_loss_weight", "whole_freeze_bn", "whole_average_from", "whole_paste_max")


#: ``train`` keys that only act on real images in the crop stage: a simulated-stage checkpoint ignores them.
REAL_STAGE_KEYS = ("paste_max",)


def resumable(saved: dict, cfg: CrowdConfig, step: int) -> bool:
    """True when a checkpoint written at ``step`` under config ``saved`` (a ``to_dict``) can go on under ``cfg``:
    the same config, or one that differs only in the whole-frame stage keys while the checkpoint has not
    entered that stage yet. Keys added to the config since the checkpoint was written count at their defaults."""
    now = cfg.to_dict()
    try:
        saved = CrowdConfig.from_dict(saved, "checkpoint config").to_dict()
    except ConfigError:
        return False
    if saved == now:
        return True
    strip = [{**d, "train": {k: v for k, v in d["train"].items() if k not in WHOLE_KEYS}} for d in (saved, now)]
    return strip[0] == strip[1] and step <= cfg.sim.steps + cfg.train.steps


def set_train_mode(net: CrowdNet, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` the BatchNorm layers stay in eval mode (their running statistics are
    used and kept), so the training forward pass is the inference one."""
    net.train()
    if freeze_bn:
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def density_loss(pred: torch.Tensor, target: torch.Tensor, cell_weight: float, count_weight: float) -> torch.Tensor:
    """``cell_weight`` x mean squared cell error + ``count_weight`` x mean |count error| per image."""
    return cell_weight * torch.mean((pred - target) ** 2) + count_weight * torch.mean(
        torch.abs(pred.sum(dim=(1, 2, 3)) - target.sum(dim=(1, 2, 3))))


def whole_frame_step(net: CrowdNet, pairs: list[tuple[np.ndarray, np.ndarray]], cfg: CrowdConfig) -> torch.Tensor:
    """Loss of one whole-frame batch (frames of different sizes go through one at a time). The cell term has the
    per-cell weight of the crop stage (``cell_loss_weight / (crop / 8)^2``), so it is the sum of squared cell
    errors over the frame when ``cell_loss_weight`` = (crop / 8)^2."""
    tc = cfg.train
    per_cell = tc.cell_loss_weight / (tc.crop / 8) ** 2
    count_w = tc.count_loss_weight if tc.whole_count_loss_weight < 0 else tc.whole_count_loss_weight
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (img, _) in enumerate(pairs):
        groups.setdefault(img.shape, []).append(i)
    total = torch.zeros(())
    for idx in groups.values():
        x = torch.from_numpy(np.stack([pairs[i][0] for i in idx]))
        y = torch.from_numpy(np.stack([pairs[i][1] for i in idx]))[:, None]
        cells = y.shape[2] * y.shape[3]
        total = total + density_loss(net(x), y, per_cell * cells, count_w) * (len(idx) / len(pairs))
    return total


def train_crowd(cfg: CrowdConfig, out_dir: str | Path, resume: bool = True, progress: bool = True) -> dict:
    """Pre-train on simulated scenes (``sim.steps``), train on the real training scenes (``train.steps``), keep
    the final weights (or, with ``train.select_best``, those of the real stage with the best smoothed validation
    MAE; with ``train.ema_decay`` > 0 the moving average of the real-stage weights is evaluated, selected and
    shipped), fit the interval on validation and training images and save the model directory. Returns a summary
    (also in ``training.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    split = load_split(cfg.data, cfg.model.max_side)
    if not split["train"] or not split["val"]:
        raise DataError("need training and validation images", cfg.data.root)
    if cfg.data.train_on_val:  # final fit: val trains too (and is reported in-sample)
        split["train"] = split["train"] + split["val"]
    net = CrowdNet(cfg.model)
    ema = copy.deepcopy(net) if tc.ema_decay > 0 else None
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    aug = Augmenter(cfg.data, tc.crop, tc.scale_min, tc.scale_max, tc.jitter, paste_max=tc.paste_max)
    ckpt = out_dir / CHECKPOINT_FILE
    step, elapsed, cpu_used = 0, 0.0, 0.0
    loss_sum, loss_n = 0.0, 0  # mean training loss since the last evaluation
    best = {"mae": math.inf, "step": 0, "state": None}
    history: list[dict] = []
    resume_state: dict | None = None
    if resume and ckpt.is_file():
        state = load_training_state(ckpt)
        saved_cfg = state["extra"].get("config")
        if saved_cfg is not None and not resumable(saved_cfg, cfg, int(state["step"])):
            raise ModelError("checkpoint was written with another config; train afresh (--fresh) or elsewhere",
                             str(ckpt))
        try:
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["opt"])
            if ema is not None:
                ema.load_state_dict(state["extra"]["ema"])
        except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
            raise ModelError(f"checkpoint does not match the model: {str(exc).splitlines()[0]}", str(ckpt)) from exc
        step = int(state["step"])
        extra = state["extra"]
        rng.bit_generator.state = extra["np_rng"]
        torch.set_rng_state(extra["torch_rng"])
        best = extra["best"]
        history = extra["history"]
        elapsed = float(extra.get("seconds", 0.0))
        cpu_used = float(extra.get("cpu_seconds", 0.0))
        loss_sum, loss_n = float(extra.get("loss_sum", 0.0)), int(extra.get("loss_n", 0))
        resume_state = state
        log.info("resumed from %s at step %d", ckpt, step)
    for group in opt.param_groups:
        group.setdefault("initial_lr", tc.lr)
    sim_steps = cfg.sim.steps
    total = sim_steps + tc.steps  # end of the crop stages; the whole-frame stage follows
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: stage_lr_factor(s, cfg), last_epoch=step - 1)
    shipped = ema if ema is not None else net  # the weights that are evaluated, selected and saved
    n_sim_real = round(tc.batch_size * tc.sim_fraction)  # simulated crops in each real-stage batch
    sim = load_sim_samples(cfg, progress) if step < sim_steps or n_sim_real else []
    net.train()
    start, cpu_start = time.time() - elapsed, time.process_time() - cpu_used
    train = split["train"]
    bar = tqdm(total=total + tc.whole_steps, initial=step, desc="train-crowd", disable=not progress)
    while step < total:
        n_real = 0  # the first n_real samples of the batch are real images (copy-paste applies to those only)
        if step < sim_steps:
            chosen = [sim[i] for i in rng.integers(0, len(sim), size=tc.batch_size)]
        else:
            chosen = [train[i] for i in rng.integers(0, len(train), size=tc.batch_size - n_sim_real)]
            n_real = len(chosen)
            if n_sim_real:
                chosen += [sim[i] for i in rng.integers(0, len(sim), size=n_sim_real)]
        pairs = [aug(sample, rng, paste=i < n_real) for i, sample in enumerate(chosen)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
        # weighted cell MSE (``cell_loss_weight`` = (crop / 8)^2 makes it the per-crop sum of squared cell errors;
        # the old 64 made it ~0.15 at most, so the count term alone drove training) + a per-crop count L1 term
        loss = density_loss(net(x), y, tc.cell_loss_weight, tc.count_loss_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_now = opt.param_groups[0]["lr"]
        sched.step()
        step += 1
        if ema is not None:
            # the average covers the real stage only (it starts from the pre-trained weights), with a warm-up
            # of its own: early on it follows the weights more closely
            local = step - sim_steps
            ema_update(ema, net, 0.0 if local <= 0 else min(tc.ema_decay, (1.0 + local) / (10.0 + local)))
        loss_sum += float(loss.detach())
        loss_n += 1
        bar.update(1)
        if step % tc.eval_every == 0 or step in (sim_steps, total):
            stage = "sim" if step <= sim_steps else "real"
            val_mae = _mae(*evaluate_counts(net if stage == "sim" else shipped, split["val"]))
            history.append({"step": step, "stage": stage, "loss": loss_sum / max(loss_n, 1), "val_mae": val_mae,
                            "lr": lr_now})
            loss_sum, loss_n = 0.0, 0
            real_hist = [h for h in history if h.get("stage", "real") == stage]
            score = float(np.mean([h["val_mae"] for h in real_hist[-tc.select_window:]]))
            history[-1]["score"] = score
            bar.set_postfix(stage=stage, loss=f"{history[-1]['loss']:.3f}", val_mae=f"{val_mae:.2f}",
                            score=f"{score:.2f}")
            log.info("step %d (%s): mean loss %.4f, val MAE %.2f, smoothed %.2f", step, stage, history[-1]["loss"],
                     val_mae, score)
            if stage == "real" and step - sim_steps >= tc.select_after and score < best["mae"]:
                best = {"mae": score, "step": step,
                        "state": {k: v.detach().clone() for k, v in shipped.state_dict().items()}}
        if step % tc.checkpoint_every == 0 or step in (sim_steps, total):
            save_training_state(ckpt, net, opt, step, {
                "config": cfg.to_dict(), "cpu_seconds": time.process_time() - cpu_start,
                "np_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "best": best,
                "history": history, "seconds": time.time() - start, "loss_sum": loss_sum, "loss_n": loss_n,
                "ema": ema.state_dict() if ema is not None else None})
    if tc.select_best and best["state"] is not None:
        shipped.load_state_dict(best["state"])
    whole_avg: dict | None = None
    if tc.whole_steps:
        whole_avg, step = _whole_frame_stage(cfg, net, shipped, split, rng, ckpt, step, history, best, ema,
                                             resume_state if resume_state and resume_state["step"] > total else None,
                                             start, cpu_start, bar)
        shipped.load_state_dict(whole_avg)
    bar.close()
    seconds, cpu_seconds = time.time() - start, time.process_time() - cpu_start
    if tc.recalibrate_bn:
        recalibrate_batchnorm(shipped, split["train"])
    shipped.eval()
    preds, truths = evaluate_counts(shipped, split["val"])
    # Validation chose these weights, so its residuals alone are optimistic (7 images that a near-constant
    # prediction happens to fit: 20 % test coverage at a nominal 90 %); the training images' residuals are
    # no better on their own for a model that fits them. The wider of the two dispersions is the honest one.
    train_preds, train_truths = evaluate_counts(shipped, split["train"])
    interval = wider(fit_interval(preds, truths, tc.interval_level),
                     fit_interval(train_preds, train_truths, tc.interval_level))
    save_crowd_model(shipped, cfg, out_dir, interval)
    final_val_mae = _mae(preds, truths)
    shipped_kind = ("best_val" if tc.select_best and best["state"] is not None else "final") + (
        "_ema" if ema is not None else "")
    if tc.whole_steps:
        shipped_kind = f"whole_average_after_{shipped_kind}"
    after_sim = [h["val_mae"] for h in history if h["step"] == sim_steps and h.get("stage") == "sim"]
    summary = {"steps": step, "sim_steps": sim_steps, "real_steps": tc.steps, "whole_steps": tc.whole_steps,
               "seconds": seconds,
               "cpu_seconds": cpu_seconds, "val_mae_after_sim": after_sim[-1] if after_sim else None,
               "best_step": best["step"], "best_val_mae": best["mae"],
               "final_val_mae": final_val_mae, "train_image_mae": _mae(train_preds, train_truths),
               "train_image_corr": float(np.corrcoef(train_preds, train_truths)[0, 1]),
               "shipped": shipped_kind, "ema_decay": tc.ema_decay,
               "select_window": tc.select_window, "interval_phi": interval.phi, "history": history,
               "train_on_val": cfg.data.train_on_val,
               "split": {k: [s.name for s in v] for k, v in split.items()}}
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _whole_frame_stage(cfg: CrowdConfig, net: CrowdNet, start_from: CrowdNet, split: dict, rng: np.random.Generator,
                       ckpt: Path, step: int, history: list[dict], best: dict, ema: CrowdNet | None,
                       state: dict | None, start: float, cpu_start: float, bar: tqdm) -> tuple[dict, int]:
    """``train.whole_steps`` steps on whole training frames from ``start_from``'s weights (or resumed from
    ``state``, a checkpoint inside this stage), at a constant learning rate after a short warm-up, with BatchNorm
    statistics optionally taken from the whole frames and frozen. Returns the equal-weight average of the weights
    from ``whole_average_from`` of the stage on (the final weights when that is empty) and the global step."""
    tc = cfg.train
    begin = cfg.sim.steps + tc.steps
    end = begin + tc.whole_steps
    avg_from = begin + int(tc.whole_average_from * tc.whole_steps)
    train = split["train"]
    aug = WholeFrameAugmenter(cfg.data, tc.whole_scale_max, tc.jitter, paste_max=tc.whole_paste_max)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.whole_lr, weight_decay=tc.weight_decay)
    avg: dict | None = None
    n_avg = 0
    if state is None:
        net.load_state_dict(start_from.state_dict())
        if tc.whole_freeze_bn:
            recalibrate_batchnorm(net, train)
    else:
        opt.load_state_dict(state["opt"])
        avg, n_avg = state["extra"]["whole_avg"], int(state["extra"]["whole_n_avg"])
    set_train_mode(net, tc.whole_freeze_bn)
    probe = copy.deepcopy(net).eval()  # evaluates the running average
    loss_sum, loss_n = 0.0, 0
    if state is not None:
        loss_sum, loss_n = float(state["extra"].get("loss_sum", 0.0)), int(state["extra"].get("loss_n", 0))
    while step < end:
        local = step - begin
        for group in opt.param_groups:
            group["lr"] = tc.whole_lr * min(1.0, (local + 1) / (tc.whole_warmup_steps + 1))
        chosen = [train[i] for i in rng.integers(0, len(train), size=tc.whole_batch_size)]
        loss = whole_frame_step(net, [aug(s, rng) for s in chosen], cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_sum, loss_n = loss_sum + float(loss.detach()), loss_n + 1
        if step > avg_from:
            n_avg += 1
            with torch.no_grad():
                cur = net.state_dict()
                if avg is None:
                    avg = {k: v.detach().clone() for k, v in cur.items()}
                else:
                    for k, v in cur.items():
                        if v.dtype.is_floating_point:
                            avg[k].add_(v.detach() - avg[k], alpha=1.0 / n_avg)
                        else:
                            avg[k].copy_(v)
        bar.update(1)
        if step % tc.eval_every == 0 or step == end:
            val_mae = _mae(*evaluate_counts(net, split["val"]))
            entry = {"step": step, "stage": "whole", "loss": loss_sum / max(loss_n, 1), "val_mae": val_mae,
                     "lr": opt.param_groups[0]["lr"]}
            if avg is not None:
                probe.load_state_dict(avg)
                entry["val_mae_average"] = _mae(*evaluate_counts(probe, split["val"]))
            history.append(entry)
            set_train_mode(net, tc.whole_freeze_bn)
            loss_sum, loss_n = 0.0, 0
            bar.set_postfix(stage="whole", loss=f"{entry['loss']:.3f}", val_mae=f"{val_mae:.2f}")
            log.info("step %d (whole frames): mean loss %.4f, val MAE %.2f (average of %d: %s)", step,
                     entry["loss"], val_mae, n_avg, f"{entry.get('val_mae_average', float('nan')):.2f}")
        if step % tc.checkpoint_every == 0 or step == end:
            save_training_state(ckpt, net, opt, step, {
                "config": cfg.to_dict(), "cpu_seconds": time.process_time() - cpu_start,
                "np_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "best": best,
                "history": history, "seconds": time.time() - start, "loss_sum": loss_sum, "loss_n": loss_n,
                "ema": ema.state_dict() if ema is not None else None, "whole_avg": avg, "whole_n_avg": n_avg})
    final = avg if avg is not None else {k: v.detach().clone() for k, v in net.state_dict().items()}
    return final, step

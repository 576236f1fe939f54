"""Fine-tuning a trained detector on a few labelled frames (the per-fold step of cross-validation).

Uses the training loop's pieces (samples, augmentation, camera/LiDAR dropout, loss); batches are drawn with
replacement because a fold holds fewer frames than a few batches. BatchNorm statistics stay frozen: batches
of a handful of real frames would make them noise.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from perception.detector.config import DetectorConfig
from perception.detector.data import SampleDataset, frame_to_sample, save_sample
from perception.detector.model import FusionNet
from perception.detector.train import train_step
from perception.errors import ConfigError, DataError
from perception.frame import Frame

log = logging.getLogger(__name__)


def _freeze_batchnorm(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def finetune(net: FusionNet, frames: list[Frame], cfg: DetectorConfig, steps: int, lr: float = 2e-4,
             seed: int = 0, desc: str = "finetune") -> FusionNet:
    """A fine-tuned copy of ``net`` after ``steps`` AdamW steps on augmented batches of ``frames`` (which need
    labels and a rig); ``net`` itself is left unchanged. ``steps == 0`` returns an unchanged copy."""
    if steps < 0 or lr <= 0:
        raise ConfigError(f"steps must be >= 0 and lr > 0, got {steps}, {lr}", "finetune")
    tuned = copy.deepcopy(net)
    tuned.eval()
    if steps == 0:
        return tuned
    if not frames:
        raise DataError("no frames to fine-tune on", "finetune")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    bs = min(cfg.train.batch_size, len(frames))
    with tempfile.TemporaryDirectory(prefix="finetune_") as tmp:
        paths = []
        for i, f in enumerate(frames):
            if f.rig is None:
                raise DataError("frame has no rig: cannot build a training sample", f.frame_id or f"frame {i}")
            paths.append(Path(tmp) / f"{i:05d}.npz")
            save_sample(paths[-1], frame_to_sample(f, cfg.model))
        dataset = SampleDataset(paths, cfg.model, train=True, seed=seed)
        opt = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=lr,
                                weight_decay=cfg.train.weight_decay)
        tuned.train()
        _freeze_batchnorm(tuned)
        for _ in tqdm(range(steps), desc=desc, unit="step"):
            items = [dataset[int(j)] for j in rng.choice(len(dataset), size=bs, replace=len(dataset) < bs)]
            train_step(tuned, opt, items, cfg, rng)
    tuned.eval()
    return tuned

"""Crowd-counter config: ``model`` / ``data`` / ``train`` dataclasses loaded from YAML with validation."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from perception.config_io import build_dataclass, read_yaml_mapping
from perception.errors import ConfigError

#: Attention variants understood by :func:`perception.crowd.attention.make_attention`.
ATTENTION_VARIANTS = ("none", "simam", "channel", "spatial", "combined")


#: Rectifications of the density head.
OUTPUTS = ("relu", "abs")


@dataclass
class CrowdModelConfig:
    """Network shape: MobileNetV2 ``features[:front_blocks]`` (ImageNet-pretrained), dilated back end at stride 8,
    1x1 density head, parameter-free attention on the fused features and after the back end."""

    name: str = "crowd_mnv2"
    front_blocks: int = 14  # MobileNetV2 features[:N]: 7 = stride 8 (32 ch); 8-14 add stride-16 blocks (96 ch at 14)
    pretrained: bool = True  # initialise the front end from the pinned ImageNet weights (perception.crowd.pretrained)
    freeze_blocks: int = 4  # first MobileNetV2 modules kept frozen in training (all backbone BatchNorm is frozen)
    back_channels: list[int] = field(default_factory=lambda: [64, 64, 32])
    dilation: int = 2
    attention: str = "simam"
    simam_lambda: float = 1e-4
    max_side: int = 512  # images are resized so that their longer side is at most this (points scaled alike)
    output: str = "relu"  # density = relu(head) (leaky backward in training) or abs(head), as the Bayesian loss's code

    def validate(self, where: str) -> None:
        """Raise ConfigError on out-of-range values."""
        if self.attention not in ATTENTION_VARIANTS:
            raise ConfigError(f"unknown attention {self.attention!r}; one of {ATTENTION_VARIANTS}",
                              f"{where}:model.attention")
        if not 7 <= self.front_blocks <= 14:
            raise ConfigError("front_blocks must be in [7, 14] (stride 8 or 16)", f"{where}:model.front_blocks")
        if not 0 <= self.freeze_blocks <= self.front_blocks:
            raise ConfigError("freeze_blocks must be in [0, front_blocks]", f"{where}:model.freeze_blocks")
        if not self.back_channels or any(c < 1 for c in self.back_channels):
            raise ConfigError("need at least one positive back-end width", f"{where}:model.back_channels")
        if self.dilation < 1:
            raise ConfigError("dilation must be >= 1", f"{where}:model.dilation")
        if self.max_side < 64 or self.max_side % 16:
            raise ConfigError("max_side must be a multiple of 16 and >= 64", f"{where}:model.max_side")
        if self.output not in OUTPUTS:
            raise ConfigError(f"output must be one of {OUTPUTS}", f"{where}:model.output")
        if not 0.0 < self.simam_lambda < 1.0:
            raise ConfigError("simam_lambda must be in (0, 1)", f"{where}:model.simam_lambda")


@dataclass
class CrowdDataConfig:
    """Training datasets (name -> folder with images/ + points/) and the validation split carved from them: an
    image whose name matches one of its dataset's ``val_patterns`` (regular expressions; camera / scene / time
    blocks) validates, the rest trains."""

    datasets: dict[str, str] = field(default_factory=lambda: {
        "brt": "../shared/data/crowd_real/brt", "shb": "../shared/data/crowd_real/shb",
        "mall": "../shared/data/crowd_real/mall"})
    val_patterns: dict[str, list[str]] = field(default_factory=dict)
    limit: int = 0  # > 0: at most this many train and this many val images per dataset (tiny test configs)
    knn: int = 3
    sigma_beta: float = 0.3
    sigma_min: float = 2.0
    sigma_max: float = 16.0
    sigma_single: float = 6.0  # sigma when an image has fewer than 2 heads

    def validate(self, where: str) -> None:
        """Raise ConfigError on out-of-range values or malformed patterns."""
        if not self.datasets:
            raise ConfigError("need at least one dataset", f"{where}:data.datasets")
        unknown = set(self.val_patterns) - set(self.datasets)
        if unknown:
            raise ConfigError(f"val_patterns for unknown dataset(s) {sorted(unknown)}", f"{where}:data.val_patterns")
        for name, pats in self.val_patterns.items():
            for pat in pats:
                try:
                    re.compile(pat)
                except re.error as exc:
                    raise ConfigError(f"bad pattern {pat!r}: {exc}", f"{where}:data.val_patterns.{name}") from exc
        if self.limit < 0 or self.knn < 1:
            raise ConfigError("need limit >= 0 and knn >= 1", f"{where}:data.knn")
        if not 0.0 < self.sigma_min <= self.sigma_max:
            raise ConfigError("need 0 < sigma_min <= sigma_max", f"{where}:data.sigma_min")


#: Learning-rate schedules of the whole-frame stage.
WHOLE_SCHEDULES = ("constant", "cosine")
#: Losses of the whole-frame stage.
WHOLE_LOSSES = ("density", "bayesian")


@dataclass
class CrowdTrainConfig:
    """Optimisation schedule: random crops (``steps``), then whole frames (``whole_steps``), datasets sampled
    equally; everything seeded."""

    seed: int = 0
    steps: int = 1200
    batch_size: int = 6  # crops per step, drawn round-robin from the datasets (dataset-balanced)
    crop: int = 256
    lr: float = 1e-3
    backbone_lr: float = 2e-4  # learning rate of the trainable pretrained blocks
    warmup_steps: int = 50  # linear warm-up to lr (capped at half the run), then cosine to 0
    weight_decay: float = 1e-4
    scale_min: float = 0.7
    scale_max: float = 1.3
    jitter: float = 0.2
    grey_prob: float = 0.1  # share of crops turned grey (night / monochrome cameras)
    count_loss_weight: float = 0.1
    cell_loss_weight: float = 1024.0  # x mean squared error of the stride-8 density cells; (crop/8)^2 = per-crop sum
    ema_decay: float = 0.995  # > 0: evaluate and ship an exponential moving average of the weights
    # Stage on whole training frames after the crops (what inference sees: whole frames count ~20-40 % more than
    # their crops after the crop stage alone), one frame of each dataset per step; EMA continues. ``steps`` 0 trains
    # on whole frames only.
    whole_steps: int = 0
    whole_lr: float = 2e-4
    whole_schedule: str = "constant"  # "constant" at whole_lr, or "cosine": warm-up then cosine from whole_lr to 0
    whole_scale: float = 0.0  # whole frames resized by a random factor in [1 - whole_scale, 1 + whole_scale]
    # Loss of the whole-frame stage: "density" = the crops' cell MSE + count term against the adaptive Gaussian
    # maps, or "bayesian" = Bayesian loss on the head points (Ma et al. 2019), posterior width ``bayes_sigma`` px.
    whole_loss: str = "density"
    bayes_sigma: float = 8.0
    bayes_background: float = 1.0
    eval_every: int = 200
    checkpoint_every: int = 50
    threads: int = 2
    interval_level: float = 0.9

    def validate(self, where: str) -> None:
        """Raise ConfigError on out-of-range values."""
        if self.steps < 0 or self.batch_size < 1 or self.steps + self.whole_steps < 1:
            raise ConfigError("need steps >= 0, batch_size >= 1 and steps + whole_steps >= 1", f"{where}:train.steps")
        if self.crop < 64 or self.crop % 16:
            raise ConfigError("crop must be a multiple of 16 and >= 64", f"{where}:train.crop")
        if not 0.0 < self.scale_min <= self.scale_max:
            raise ConfigError("need 0 < scale_min <= scale_max", f"{where}:train.scale_min")
        if not 0.0 < self.interval_level < 1.0:
            raise ConfigError("interval_level must be in (0, 1)", f"{where}:train.interval_level")
        if self.lr <= 0 or self.backbone_lr < 0:
            raise ConfigError("need lr > 0 and backbone_lr >= 0", f"{where}:train.lr")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps must be >= 0", f"{where}:train.warmup_steps")
        if self.cell_loss_weight <= 0 or self.count_loss_weight < 0:
            raise ConfigError("need cell_loss_weight > 0 and count_loss_weight >= 0", f"{where}:train.cell_loss_weight")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("ema_decay must be in [0, 1)", f"{where}:train.ema_decay")
        if not 0.0 <= self.grey_prob <= 1.0:
            raise ConfigError("grey_prob must be in [0, 1]", f"{where}:train.grey_prob")
        if self.whole_steps < 0 or self.whole_lr <= 0:
            raise ConfigError("need whole_steps >= 0 and whole_lr > 0", f"{where}:train.whole_steps")
        if self.whole_schedule not in WHOLE_SCHEDULES:
            raise ConfigError(f"whole_schedule must be one of {WHOLE_SCHEDULES}", f"{where}:train.whole_schedule")
        if self.whole_loss not in WHOLE_LOSSES:
            raise ConfigError(f"whole_loss must be one of {WHOLE_LOSSES}", f"{where}:train.whole_loss")
        if self.bayes_sigma <= 0 or self.bayes_background <= 0:
            raise ConfigError("need bayes_sigma > 0 and bayes_background > 0", f"{where}:train.bayes_sigma")
        if not 0.0 <= self.whole_scale < 1.0:
            raise ConfigError("whole_scale must be in [0, 1)", f"{where}:train.whole_scale")
        if self.eval_every < 1 or self.checkpoint_every < 1 or self.threads < 1:
            raise ConfigError("need eval_every, checkpoint_every and threads >= 1", f"{where}:train.eval_every")


@dataclass
class CrowdConfig:
    """A whole crowd config file: ``model`` + ``data`` + ``train`` sections."""

    model: CrowdModelConfig = field(default_factory=CrowdModelConfig)
    data: CrowdDataConfig = field(default_factory=CrowdDataConfig)
    train: CrowdTrainConfig = field(default_factory=CrowdTrainConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> CrowdConfig:
        """Load and validate a YAML config; errors name the file and key."""
        return cls.from_dict(read_yaml_mapping(path), str(path))

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str = "<dict>") -> CrowdConfig:
        """Build from a parsed mapping; unknown sections or keys are errors."""
        if not isinstance(doc, dict):
            raise ConfigError("expected a mapping", where)
        unknown = set(doc) - {"model", "data", "train"}
        if unknown:
            raise ConfigError(f"unknown section(s) {sorted(unknown)}", where)
        cfg = cls(model=build_dataclass(CrowdModelConfig, doc.get("model") or {}, f"{where}:model"),
                  data=build_dataclass(CrowdDataConfig, doc.get("data") or {}, f"{where}:data"),
                  train=build_dataclass(CrowdTrainConfig, doc.get("train") or {}, f"{where}:train"))
        cfg.model.validate(where)
        cfg.data.validate(where)
        cfg.train.validate(where)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for YAML."""
        return {"model": dataclasses.asdict(self.model), "data": dataclasses.asdict(self.data),
                "train": dataclasses.asdict(self.train)}

    def to_yaml(self, path: str | Path) -> None:
        """Write the resolved config."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

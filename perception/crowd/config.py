"""Crowd-counter config: ``model`` / ``data`` / ``sim`` / ``train`` dataclasses loaded from YAML with validation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from perception.config_io import build_dataclass, read_yaml_mapping
from perception.errors import ConfigError

#: Attention variants understood by :func:`perception.crowd.attention.make_attention`.
ATTENTION_VARIANTS = ("none", "simam", "channel", "spatial", "combined")


@dataclass
class CrowdModelConfig:
    """Network shape: VGG-like front end (stride-2 stem + 2 pools -> stride 8), dilated back end, 1x1 density head."""

    name: str = "crowd_csrnet_tiny"
    front_channels: list[int] = field(default_factory=lambda: [16, 32, 48])
    front_depth: list[int] = field(default_factory=lambda: [1, 1, 1])  # 3x3 convolutions per front-end stage
    back_channels: list[int] = field(default_factory=lambda: [48, 48, 32])
    dilation: int = 2
    attention: str = "combined"
    stem_attention: bool = True  # attention also after the stride-2 stem (costly at that resolution)
    norm: str = "batch"  # batch | instance (per-image statistics, identical in training and inference)
    simam_lambda: float = 1e-4
    max_side: int = 512  # images are resized so that their longer side is at most this (points scaled alike)

    def validate(self, where: str) -> None:
        """Raise ConfigError on out-of-range values."""
        if self.attention not in ATTENTION_VARIANTS:
            raise ConfigError(f"unknown attention {self.attention!r}; one of {ATTENTION_VARIANTS}",
                              f"{where}:model.attention")
        if len(self.front_channels) != 3 or any(c < 1 for c in self.front_channels):
            raise ConfigError("need 3 positive front-end widths (one per stride-2 stage)",
                              f"{where}:model.front_channels")
        if len(self.front_depth) != 3 or any(d < 1 for d in self.front_depth):
            raise ConfigError("need 3 front-end depths >= 1", f"{where}:model.front_depth")
        if not self.back_channels or any(c < 1 for c in self.back_channels):
            raise ConfigError("need at least one positive back-end width", f"{where}:model.back_channels")
        if self.norm not in ("batch", "instance"):
            raise ConfigError(f"unknown norm {self.norm!r}; batch or instance", f"{where}:model.norm")
        if self.dilation < 1:
            raise ConfigError("dilation must be >= 1", f"{where}:model.dilation")
        if self.max_side < 64 or self.max_side % 8:
            raise ConfigError("max_side must be a multiple of 8 and >= 64", f"{where}:model.max_side")
        if not 0.0 < self.simam_lambda < 1.0:
            raise ConfigError("simam_lambda must be in (0, 1)", f"{where}:model.simam_lambda")


@dataclass
class CrowdDataConfig:
    """Where the data is and how it is split (by scene, fixed lists) and turned into density maps."""

    root: str = "../shared/data/crowd_sample"
    test_scenes: list[str] = field(default_factory=lambda: ["scene_003", "scene_009", "scene_015", "scene_021",
                                                            "handclick_02", "handclick_06"])
    val_scenes: list[str] = field(default_factory=lambda: ["scene_006", "scene_012", "scene_024", "handclick_05"])
    knn: int = 3
    sigma_beta: float = 0.3
    sigma_min: float = 2.0
    sigma_max: float = 16.0
    sigma_single: float = 6.0  # sigma when an image has fewer than 2 heads
    # Final fit: the val scenes train too (once cross-validation over the training scenes has chosen the recipe);
    # val numbers are then in-sample, and the count interval must come from cross-validation
    # (``python -m perception.crowd.crossval ... --interval-into MODEL_DIR``).
    train_on_val: bool = False

    def validate(self, where: str) -> None:
        """Raise ConfigError on out-of-range values or overlapping splits."""
        overlap = set(self.test_scenes) & set(self.val_scenes)
        if overlap:
            raise ConfigError(f"scenes in both test and val: {sorted(overlap)}", f"{where}:data.val_scenes")
        if self.knn < 1:
            raise ConfigError("knn must be >= 1", f"{where}:data.knn")
        if not 0.0 < self.sigma_min <= self.sigma_max:
            raise ConfigError("need 0 < sigma_min <= sigma_max", f"{where}:data.sigma_min")


@dataclass
class CrowdSimConfig:
    """Pre-training on simulated crowd scenes (:mod:`perception.crowd.sim_scenes`) before the real images."""

    steps: int = 0  # pre-training steps; 0 trains on the real images only
    scenes: int = 240
    seed: int = 1
    lr: float = 2e-3
    people_max: int = 120
    cache_dir: str = "data/crowd_sim_cache"  # rendered scenes are kept here ("" = render every time)

    def validate(self, where: str) -> None:
        """Raise ConfigError on out-of-range values."""
        if self.steps < 0:
            raise ConfigError("steps must be >= 0", f"{where}:sim.steps")
        if self.steps and self.scenes < 1:
            raise ConfigError("need at least one scene to pre-train on", f"{where}:sim.scenes")
        if self.lr <= 0:
            raise ConfigError("lr must be > 0", f"{where}:sim.lr")
        if self.people_max < 1:
            raise ConfigError("people_max must be >= 1", f"{where}:sim.people_max")


@dataclass
class CrowdTrainConfig:
    """Optimisation schedule; everything seeded."""

    seed: int = 0
    steps: int = 1200  # steps on the real training images (after ``sim.steps``)
    batch_size: int = 8
    crop: int = 256
    lr: float = 2e-3
    warmup_steps: int = 0  # linear warm-up to lr (capped at half a stage), then cosine to 0; again in each stage
    sim_fraction: float = 0.0  # share of each real-stage batch drawn from the simulated scenes
    weight_decay: float = 1e-4
    scale_min: float = 0.7
    scale_max: float = 1.3
    jitter: float = 0.2
    paste_max: int = 0  # copy-paste 0..paste_max patches of people into each real crop's frame (data.paste_people)
    count_loss_weight: float = 0.05
    cell_loss_weight: float = 64.0  # x mean squared error of the stride-8 density cells (crop/8)^2 = the per-crop sum
    eval_every: int = 100
    checkpoint_every: int = 100
    threads: int = 1
    interval_level: float = 0.9
    select_best: bool = False  # ship the best-validation weights instead of the final ones (val set is tiny)
    ema_decay: float = 0.0  # > 0: evaluate and ship an exponential moving average of the real-stage weights
    select_window: int = 1  # best-validation selection uses the mean val MAE of the last this many evaluations
    select_after: int = 0  # real-stage evaluations before this step are never selected (near-constant predictors)
    recalibrate_bn: bool = False  # at the end, BatchNorm statistics from the whole real training images
    # Final stage on whole training frames (what inference sees), after the crop stages; 0 = none. It starts from
    # the crop stage's shipped weights (EMA / best-val / final), runs at a constant ``whole_lr`` and ships the
    # equal-weight average of its weights from ``whole_average_from`` (a fraction of the stage) on.
    whole_steps: int = 0
    whole_batch_size: int = 2
    whole_lr: float = 2e-4
    whole_warmup_steps: int = 10
    whole_scale_max: float = 1.0  # random zoom in [1, this] and a crop back to the frame size (no padding)
    whole_count_loss_weight: float = -1.0  # < 0: count_loss_weight
    whole_freeze_bn: bool = True  # BatchNorm statistics from the whole training frames, frozen during the stage
    whole_average_from: float = 0.5
    whole_paste_max: int = 0  # copy-paste 0..this many patches of people into each whole training frame

    def validate(self, where: str) -> None:
        """Raise ConfigError on out-of-range values."""
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("steps and batch_size must be >= 1", f"{where}:train.steps")
        if self.crop < 64 or self.crop % 8:
            raise ConfigError("crop must be a multiple of 8 and >= 64", f"{where}:train.crop")
        if not 0.0 < self.scale_min <= self.scale_max:
            raise ConfigError("need 0 < scale_min <= scale_max", f"{where}:train.scale_min")
        if not 0.0 < self.interval_level < 1.0:
            raise ConfigError("interval_level must be in (0, 1)", f"{where}:train.interval_level")
        if self.lr <= 0:
            raise ConfigError("lr must be > 0", f"{where}:train.lr")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps must be >= 0", f"{where}:train.warmup_steps")
        if self.cell_loss_weight <= 0 or self.count_loss_weight < 0:
            raise ConfigError("need cell_loss_weight > 0 and count_loss_weight >= 0", f"{where}:train.cell_loss_weight")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("ema_decay must be in [0, 1)", f"{where}:train.ema_decay")
        if self.select_window < 1 or self.select_after < 0:
            raise ConfigError("need select_window >= 1 and select_after >= 0", f"{where}:train.select_window")
        if not 0.0 <= self.sim_fraction < 1.0:
            raise ConfigError("sim_fraction must be in [0, 1)", f"{where}:train.sim_fraction")
        if self.whole_steps < 0 or self.whole_batch_size < 1 or self.whole_warmup_steps < 0:
            raise ConfigError("need whole_steps >= 0, whole_batch_size >= 1 and whole_warmup_steps >= 0",
                              f"{where}:train.whole_steps")
        if self.whole_lr <= 0 or self.whole_scale_max < 1.0:
            raise ConfigError("need whole_lr > 0 and whole_scale_max >= 1", f"{where}:train.whole_lr")
        if self.paste_max < 0 or self.whole_paste_max < 0:
            raise ConfigError("need paste_max >= 0 and whole_paste_max >= 0", f"{where}:train.paste_max")
        if not 0.0 <= self.whole_average_from < 1.0:
            raise ConfigError("whole_average_from must be in [0, 1)", f"{where}:train.whole_average_from")


@dataclass
class CrowdConfig:
    """A whole crowd config file: ``model`` + ``data`` + ``sim`` + ``train`` sections."""

    model: CrowdModelConfig = field(default_factory=CrowdModelConfig)
    data: CrowdDataConfig = field(default_factory=CrowdDataConfig)
    sim: CrowdSimConfig = field(default_factory=CrowdSimConfig)
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
        unknown = set(doc) - {"model", "data", "sim", "train"}
        if unknown:
            raise ConfigError(f"unknown section(s) {sorted(unknown)}", where)
        cfg = cls(model=build_dataclass(CrowdModelConfig, doc.get("model") or {}, f"{where}:model"),
                  data=build_dataclass(CrowdDataConfig, doc.get("data") or {}, f"{where}:data"),
                  sim=build_dataclass(CrowdSimConfig, doc.get("sim") or {}, f"{where}:sim"),
                  train=build_dataclass(CrowdTrainConfig, doc.get("train") or {}, f"{where}:train"))
        cfg.model.validate(where)
        cfg.data.validate(where)
        cfg.sim.validate(where)
        cfg.train.validate(where)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for YAML."""
        return {"model": dataclasses.asdict(self.model), "data": dataclasses.asdict(self.data),
                "sim": dataclasses.asdict(self.sim), "train": dataclasses.asdict(self.train)}

    def to_yaml(self, path: str | Path) -> None:
        """Write the resolved config."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


"""Detector configuration: dataclasses loaded from YAML with validation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from perception.config_io import build_dataclass, read_yaml_mapping
from perception.errors import ConfigError


@dataclass
class ModelConfig:
    """Architecture of the fusion detector."""

    name: str = "fusion_default"
    classes: list[str] = field(default_factory=lambda: ["Car", "Pedestrian", "Cyclist"])
    point_range: list[float] = field(default_factory=lambda: [0.0, -39.68, -3.0, 69.12, 39.68, 1.0])
    pillar_size: list[float] = field(default_factory=lambda: [0.32, 0.32])
    max_points_per_pillar: int = 20
    max_pillars: int = 16000
    pillar_channels: int = 32
    backbone_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    backbone_layers: list[int] = field(default_factory=lambda: [2, 3, 3])
    neck_channels: int = 32
    bev_channels: int = 64
    image_size: list[int] = field(default_factory=lambda: [96, 320])
    image_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    d_model: int = 64
    num_heads: int = 4
    ffn_dim: int = 128
    num_queries: int = 64
    dropout: float = 0.0

    @property
    def grid_size(self) -> tuple[int, int]:
        """Pillar grid (nx, ny)."""
        r, s = self.point_range, self.pillar_size
        return round((r[3] - r[0]) / s[0]), round((r[4] - r[1]) / s[1])

    @property
    def bev_stride(self) -> int:
        """Stride of the BEV feature map relative to the pillar grid."""
        return 2

    @property
    def bev_shape(self) -> tuple[int, int]:
        """BEV feature map (ny, nx) at ``bev_stride``."""
        nx, ny = self.grid_size
        return ny // self.bev_stride, nx // self.bev_stride

    @property
    def embedding_dim(self) -> int:
        """Length of the frame embedding: pooled BEV features (mean, max), then pooled image tokens (mean, max)."""
        return 2 * self.bev_channels + 2 * self.d_model

    @property
    def lidar_embedding_dim(self) -> int:
        """Length of the frame embedding's LiDAR part (its first values: pooled BEV features, mean and max)."""
        return 2 * self.bev_channels

    @property
    def image_feature_shape(self) -> tuple[int, int]:
        """Image feature map (h, w) at stride 8."""
        return self.image_size[0] // 8, self.image_size[1] // 8

    def validate(self, where: str) -> None:
        """Raise ConfigError naming ``where`` and the field."""
        r = self.point_range
        if len(r) != 6 or r[3] <= r[0] or r[4] <= r[1] or r[5] <= r[2]:
            raise ConfigError("point_range must be [xmin ymin zmin xmax ymax zmax] with max > min",
                              f"{where}:model.point_range")
        nx, ny = self.grid_size
        if nx % 8 or ny % 8:
            raise ConfigError(f"pillar grid {nx}x{ny} must be divisible by 8", f"{where}:model.pillar_size")
        if self.image_size[0] % 8 or self.image_size[1] % 8:
            raise ConfigError("image_size must be divisible by 8", f"{where}:model.image_size")
        if self.d_model % self.num_heads:
            raise ConfigError("d_model must be divisible by num_heads", f"{where}:model.num_heads")
        if not self.classes:
            raise ConfigError("at least one class is needed", f"{where}:model.classes")
        if len(self.backbone_channels) != 3 or len(self.backbone_layers) != 3:
            raise ConfigError("backbone needs 3 stages", f"{where}:model.backbone_channels")


@dataclass
class TrainConfig:
    """Training schedule and data amounts."""

    seed: int = 0
    train_frames: int = 2400
    val_frames: int = 200
    calib_frames: int = 300
    test_frames: int = 300
    frames_per_drive: int = 10
    batch_size: int = 4
    epochs: int = 12
    lr: float = 2e-3
    weight_decay: float = 0.01
    camera_dropout: float = 0.3
    lidar_dropout: float = 0.1
    corruption_augment: float = 0.0  # share of samples given a random corruption (detector.corruption_augment)
    corruption_augment_names: list[str] = field(default_factory=list)  # empty: every augmentable corruption
    object_rotation: float = 0.0  # per-object rotation with its points, U(-x, x) rad (detector.object_augment)
    object_point_drop: float = 0.0  # largest share of an object's points dropped (on half of the objects)
    z_shift_std: float = 0.0  # std (m) of a vertical shift of the whole scene (detector.data.augment)
    yaw_loss: str = "sincos_l1"  # or flip_invariant (detector.loss.detection_loss)
    init_from: str = ""  # model folder (relative to the repo) whose weights training starts from
    real_data: list[str] = field(default_factory=list)  # labelled real KITTI folders mixed into training
    real_share: float = 0.0  # probability that a batch slot holds a real frame instead of a simulated one
    max_steps: int = 0  # 0: epochs x steps per epoch
    time_limit_minutes: float = 75.0
    checkpoint_every_steps: int = 200
    num_threads: int = 2


@dataclass
class DetectorConfig:
    """A whole detector config file: ``model`` + ``train`` sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DetectorConfig:
        """Load and validate a YAML config; errors name the file and key."""
        return cls.from_dict(read_yaml_mapping(path), str(path))

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str = "<dict>") -> DetectorConfig:
        """Build from a parsed mapping; unknown keys are errors (typos must not pass silently)."""
        if not isinstance(doc, dict):
            raise ConfigError("expected a mapping", where)
        unknown = set(doc) - {"model", "train"}
        if unknown:
            raise ConfigError(f"unknown section(s) {sorted(unknown)}", where)
        model = build_dataclass(ModelConfig, doc.get("model") or {}, f"{where}:model")
        train = build_dataclass(TrainConfig, doc.get("train") or {}, f"{where}:train")
        model.validate(where)
        if not 0.0 <= train.corruption_augment <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {train.corruption_augment}", f"{where}:train.corruption_augment")
        if not 0.0 <= train.z_shift_std <= 1.0:
            raise ConfigError(f"must be in [0, 1] m, got {train.z_shift_std}", f"{where}:train.z_shift_std")
        if train.corruption_augment_names:
            from perception.detector.corruption_augment import check_names

            check_names(train.corruption_augment_names, f"{where}:train.corruption_augment_names")
        return cls(model=model, train=train)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for YAML."""
        return {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}

    def to_yaml(self, path: str | Path) -> None:
        """Write the resolved config."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


"""Scene options: what the simulated world contains and which conditions / faults act on the sensors."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from perception.errors import ConfigError
from perception.frame import OOD_CLASSES

WEATHERS: tuple[str, ...] = ("clear", "rain", "fog", "snow")
SCENE_TYPES: tuple[str, ...] = ("city", "residential", "road")
#: Keys a beam-pattern override may set (same meaning as the rig YAML's ``lidar.model``).
LIDAR_MODEL_KEYS: tuple[str, ...] = (
    "channels", "vertical_fov_deg", "horizontal_resolution_deg", "horizontal_fov_deg", "max_range",
    "range_noise_std", "dropout", "vertical_angles_deg", "vertical_layout",
)
DEFAULT_LIDAR_MODEL: dict[str, Any] = {
    "channels": 64, "vertical_fov_deg": [2.0, -24.8], "horizontal_resolution_deg": 0.17,
    "horizontal_fov_deg": [-180.0, 180.0], "max_range": 120.0, "range_noise_std": 0.02, "dropout": 0.05,
}


@dataclass
class SceneOptions:
    """What a simulated drive contains. Count ranges are inclusive ``(min, max)`` per drive in the zone
    5-60 m ahead of the ego vehicle; the same density continues behind and beyond that zone.

    OOD work is plain options: ``unknown_objects`` (e.g. ``{"Animal": 1, "Debris": 2}``), ``weather`` with
    ``weather_intensity``, ``night``, a beam-pattern override ``lidar_model`` (e.g. ``{"channels": 32}``)
    and sensor faults (``camera_missing``, ``lidar_blackout_deg``).
    """

    # --- traffic (counts in the forward zone)
    cars: tuple[int, int] = (3, 13)
    vans: tuple[int, int] = (0, 2)
    trucks: tuple[int, int] = (0, 1)
    pedestrians: tuple[int, int] = (2, 8)
    cyclists: tuple[int, int] = (0, 3)
    background_density: float = 0.8  # objects behind / beyond the forward zone, relative to the forward density
    unknown_objects: dict[str, int] = field(default_factory=dict)  # OOD class name -> count
    # --- world
    scene_types: tuple[str, ...] = SCENE_TYPES
    max_curvature: float = 0.006  # 1/m; roads are straight or curve with |k| <= this
    ego_speed: tuple[float, float] = (0.0, 14.0)  # m/s
    vegetation: float = 1.0  # density multiplier for trees and hedges
    # --- conditions
    weather: str = "clear"
    weather_intensity: float = 0.5  # 0..1, ignored for clear weather
    night: bool = False
    # --- sensors
    lidar_model: dict[str, Any] | None = None  # overrides rig.lidar_model keys, e.g. {"channels": 32}
    camera_missing: bool = False  # Frame.image = None (ground truth still computed from the camera geometry)
    lidar_blackout_deg: tuple[float, float] | None = None  # azimuth sector [from, to] in degrees with no returns
    image_noise_std: float = 2.0  # camera read noise (8-bit DN)
    shadows: bool = True  # cast sun shadows in the image (half-resolution shadow rays)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field when an option is out of range."""
        for name in ("cars", "vans", "trucks", "pedestrians", "cyclists"):
            rng = getattr(self, name)
            if (not isinstance(rng, (tuple, list)) or len(rng) != 2 or not all(isinstance(v, int) for v in rng)
                    or rng[0] < 0 or rng[1] < rng[0]):
                raise ConfigError(f"expected (min, max) non-negative integers with min <= max, got {rng!r}",
                                  f"SceneOptions.{name}")
            setattr(self, name, tuple(rng))
        if not isinstance(self.unknown_objects, dict):
            raise ConfigError("expected a mapping class name -> count", "SceneOptions.unknown_objects")
        for key, count in self.unknown_objects.items():
            if key not in OOD_CLASSES:
                raise ConfigError(f"unknown object class {key!r}; expected one of {OOD_CLASSES}",
                                  f"SceneOptions.unknown_objects.{key}")
            if not isinstance(count, int) or count < 0 or count > 20:
                raise ConfigError(f"count must be an integer in 0..20, got {count!r}",
                                  f"SceneOptions.unknown_objects.{key}")
        if not self.scene_types or any(t not in SCENE_TYPES for t in self.scene_types):
            raise ConfigError(f"scene types must be a non-empty subset of {SCENE_TYPES}, got {self.scene_types!r}",
                              "SceneOptions.scene_types")
        if self.weather not in WEATHERS:
            raise ConfigError(f"weather must be one of {WEATHERS}, got {self.weather!r}", "SceneOptions.weather")
        checks = {
            "weather_intensity": (self.weather_intensity, 0.0, 1.0),
            "background_density": (self.background_density, 0.0, 5.0),
            "max_curvature": (self.max_curvature, 0.0, 0.02),
            "vegetation": (self.vegetation, 0.0, 5.0),
            "image_noise_std": (self.image_noise_std, 0.0, 50.0),
        }
        for name, (value, lo, hi) in checks.items():
            if not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ConfigError(f"must be a number in [{lo}, {hi}], got {value!r}", f"SceneOptions.{name}")
        sp = self.ego_speed
        if len(sp) != 2 or not 0 <= sp[0] <= sp[1] <= 40:
            raise ConfigError(f"expected (min, max) m/s with 0 <= min <= max <= 40, got {sp!r}",
                              "SceneOptions.ego_speed")
        if self.lidar_blackout_deg is not None:
            bo = self.lidar_blackout_deg
            if len(bo) != 2 or not all(-360 <= float(v) <= 360 for v in bo):
                raise ConfigError(f"expected (from, to) azimuth degrees, got {bo!r}", "SceneOptions.lidar_blackout_deg")
        if self.lidar_model is not None:
            if not isinstance(self.lidar_model, dict):
                raise ConfigError("expected a mapping of beam-pattern keys", "SceneOptions.lidar_model")
            for key in self.lidar_model:
                if key not in LIDAR_MODEL_KEYS:
                    raise ConfigError(f"unknown beam-pattern key; expected one of {LIDAR_MODEL_KEYS}",
                                      f"SceneOptions.lidar_model.{key}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the options (for frame metadata / reports)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

"""The OOD benchmark's distribution shifts, simulated from the ``ood`` seed base and cached on disk.

Unknown-object shifts are scored per detection (detections on unknown objects vs detections on
known-class objects in clean frames); condition shifts per frame (shifted frames vs the clean frames of
the same drive seeds). Frames are cached as KITTI folders under ``data/ood/`` (git-ignored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perception.errors import ConfigError

if TYPE_CHECKING:
    from perception.rig import Rig
    from perception.sim import SceneOptions

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
#: Where generated OOD frames are cached.
OOD_DATA = REPO / "data" / "ood"
#: Intensity of "heavy" weather (0..1).
HEAVY = 0.9
#: Frames per simulated drive (more drives = more varied scenes for the same frame count).
FRAMES_PER_DRIVE = 5


@dataclass(frozen=True)
class Shift:
    """One distribution shift: scene options applied to the ``ood`` drives, and the unit it is scored by."""

    name: str
    unit: str  # "detection" (unknown objects) or "frame" (conditions)
    options: dict[str, Any] = field(default_factory=dict)  # SceneOptions keyword arguments
    description: str = ""

    def scene_options(self) -> SceneOptions:
        """The :class:`SceneOptions` of this shift."""
        from perception.sim import SceneOptions

        return SceneOptions(**self.options)


CLEAN = Shift("clean", "frame", {}, "clear daytime, known object types only (the in-distribution reference)")
SHIFTS: tuple[Shift, ...] = (
    Shift("animal", "detection", {"unknown_objects": {"Animal": 4}}, "animals on and beside the road"),
    Shift("debris", "detection", {"unknown_objects": {"Debris": 6}}, "debris on the road"),
    Shift("stroller", "detection", {"unknown_objects": {"Stroller": 4}}, "pushed strollers"),
    Shift("construction_machine", "detection", {"unknown_objects": {"ConstructionMachine": 3}},
          "excavators / rollers"),
    Shift("heavy_rain", "frame", {"weather": "rain", "weather_intensity": HEAVY}, "heavy rain, both sensors"),
    Shift("heavy_fog", "frame", {"weather": "fog", "weather_intensity": HEAVY}, "dense fog, both sensors"),
    Shift("heavy_snow", "frame", {"weather": "snow", "weather_intensity": HEAVY}, "heavy snow, both sensors"),
    Shift("night", "frame", {"night": True}, "night (camera only; the LiDAR does not care)"),
    Shift("lidar_32_beams", "frame", {"lidar_model": {"channels": 32, "vertical_fov_deg": [10.67, -30.67]}},
          "a 32-beam LiDAR (HDL-32E-like vertical pattern) instead of the 64-beam one"),
)


def shift_by_name(name: str) -> Shift:
    """The shift called ``name`` (``clean`` included); ConfigError listing the known ones."""
    for s in (CLEAN, *SHIFTS):
        if s.name == name:
            return s
    raise ConfigError(f"unknown shift {name!r}; expected one of {[s.name for s in (CLEAN, *SHIFTS)]}", "shift")


def shift_dir(shift: Shift, n_frames: int, seed: int = 0, root: Path = OOD_DATA) -> Path:
    """Cache folder of ``n_frames`` frames of ``shift``."""
    return root / f"{shift.name}_s{seed}_n{n_frames}"


def ensure_shift_frames(rig: Rig, shift: Shift, n_frames: int, seed: int = 0, root: Path = OOD_DATA,
                        workers: int = 2) -> Path:
    """Simulate the shift's frames once (drives of split ``ood``, the same seeds for every shift) and
    return the KITTI folder; a cut run leaves no partial folder (the writer stages its output)."""
    from perception.io import write_frames
    from perception.sim import iter_split

    path = shift_dir(shift, n_frames, seed, root)
    if (path / "velodyne").is_dir():
        return path
    log.info("simulating %d frames of shift %s into %s", n_frames, shift.name, path)
    frames = iter_split(rig, "ood", n_frames, seed=seed, options=shift.scene_options(),
                        frames_per_drive=FRAMES_PER_DRIVE, workers=workers)
    write_frames(frames, path, "kitti", rig, total=n_frames)
    return path

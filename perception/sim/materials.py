"""Surface materials of the simulated world: camera albedo, LiDAR reflectance and a behaviour kind.

Albedo is linear RGB in [0, 1]; ``reflectance`` is the KITTI-like LiDAR intensity of the surface
seen head-on (road ~0.2-0.35, lane paint ~0.7, vegetation low, retro-reflectors near 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Behaviour kinds: how the renderers treat a surface beyond its albedo/reflectance.
KIND_SOLID = 0
KIND_ROAD = 1  # procedural asphalt texture and lane paint
KIND_GLASS = 2  # LiDAR often passes through (dropouts), camera shows a sky reflection
KIND_FOLIAGE = 3  # porous: LiDAR dropouts, camera leaf texture
KIND_TERRAIN = 4  # grass / dirt texture
KIND_RETRO = 5  # retro-reflective (plates, signs, lamps): high intensity
KIND_SIDEWALK = 6  # paving texture
KIND_WALL = 7  # facade texture


@dataclass(frozen=True)
class Material:
    """A surface type: camera albedo, LiDAR reflectance, behaviour kind."""

    name: str
    albedo: tuple[float, float, float]
    reflectance: float
    kind: int = KIND_SOLID


ASPHALT = Material("asphalt", (0.10, 0.10, 0.105), 0.36, KIND_ROAD)
CURB = Material("curb", (0.38, 0.37, 0.35), 0.35, KIND_SOLID)
SIDEWALK = Material("sidewalk", (0.30, 0.29, 0.27), 0.36, KIND_SIDEWALK)
GRASS = Material("grass", (0.07, 0.11, 0.035), 0.13, KIND_TERRAIN)
DIRT = Material("dirt", (0.18, 0.15, 0.10), 0.2, KIND_TERRAIN)
WALL = Material("wall", (0.45, 0.40, 0.34), 0.30, KIND_WALL)
ROOF = Material("roof", (0.25, 0.15, 0.12), 0.20, KIND_SOLID)
WINDOW = Material("window", (0.05, 0.06, 0.08), 0.06, KIND_GLASS)
CAR_PAINT = Material("car_paint", (0.5, 0.5, 0.5), 0.30, KIND_SOLID)
CAR_GLASS = Material("car_glass", (0.03, 0.035, 0.04), 0.05, KIND_GLASS)
TYRE = Material("tyre", (0.03, 0.03, 0.03), 0.06, KIND_SOLID)
PLATE = Material("plate", (0.8, 0.8, 0.75), 0.95, KIND_RETRO)
LAMP = Material("lamp", (0.8, 0.6, 0.4), 0.85, KIND_RETRO)
METAL = Material("metal", (0.35, 0.35, 0.37), 0.45, KIND_SOLID)
DARK_METAL = Material("dark_metal", (0.08, 0.08, 0.09), 0.20, KIND_SOLID)
SIGN = Material("sign", (0.7, 0.7, 0.7), 0.95, KIND_RETRO)
BARK = Material("bark", (0.10, 0.07, 0.045), 0.2, KIND_SOLID)
FOLIAGE = Material("foliage", (0.045, 0.08, 0.025), 0.1, KIND_FOLIAGE)
HEDGE = Material("hedge", (0.035, 0.07, 0.02), 0.1, KIND_FOLIAGE)
SKIN = Material("skin", (0.60, 0.42, 0.32), 0.25, KIND_SOLID)
HAIR = Material("hair", (0.08, 0.06, 0.05), 0.10, KIND_SOLID)
CLOTH = Material("cloth", (0.3, 0.3, 0.3), 0.22, KIND_SOLID)
FUR = Material("fur", (0.35, 0.24, 0.14), 0.18, KIND_SOLID)
PLASTIC = Material("plastic", (0.2, 0.2, 0.2), 0.25, KIND_SOLID)
WOOD = Material("wood", (0.40, 0.28, 0.16), 0.28, KIND_SOLID)
MACHINE_PAINT = Material("machine_paint", (0.75, 0.55, 0.05), 0.45, KIND_SOLID)
CONCRETE = Material("concrete", (0.42, 0.41, 0.39), 0.32, KIND_SOLID)

#: Every material, indexed by its id (the position in this tuple).
MATERIALS: tuple[Material, ...] = (
    ASPHALT, CURB, SIDEWALK, GRASS, DIRT, WALL, ROOF, WINDOW, CAR_PAINT, CAR_GLASS, TYRE, PLATE, LAMP, METAL,
    DARK_METAL, SIGN, BARK, FOLIAGE, HEDGE, SKIN, HAIR, CLOTH, FUR, PLASTIC, WOOD, MACHINE_PAINT, CONCRETE,
)
MATERIAL_ID: dict[str, int] = {m.name: i for i, m in enumerate(MATERIALS)}
#: Per-material behaviour kind, indexed by material id.
MATERIAL_KIND: np.ndarray = np.array([m.kind for m in MATERIALS], dtype=np.uint8)

#: Car paint colours (linear RGB) and their LiDAR reflectance, roughly the mix seen on European streets.
CAR_COLOURS: tuple[tuple[tuple[float, float, float], float], ...] = (
    ((0.75, 0.75, 0.75), 0.55),  # white
    ((0.45, 0.46, 0.48), 0.40),  # silver
    ((0.18, 0.19, 0.20), 0.25),  # grey
    ((0.03, 0.03, 0.035), 0.08),  # black
    ((0.05, 0.08, 0.25), 0.18),  # blue
    ((0.45, 0.04, 0.03), 0.30),  # red
    ((0.10, 0.20, 0.08), 0.22),  # green
    ((0.35, 0.28, 0.15), 0.30),  # beige
)
CAR_COLOUR_WEIGHTS: tuple[float, ...] = (0.22, 0.2, 0.18, 0.17, 0.09, 0.07, 0.03, 0.04)

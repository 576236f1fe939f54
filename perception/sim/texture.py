"""Procedural textures: a fixed tile of value noise sampled in world coordinates (stable across frames)."""

from __future__ import annotations

import numpy as np

_TILE_SIZE = 256
_TILE = np.random.default_rng(20240611).random((_TILE_SIZE, _TILE_SIZE)).astype(np.float32)


def texture_noise(u: np.ndarray, v: np.ndarray, cell: float) -> np.ndarray:
    """Value noise in [0, 1) on a ``cell``-metre grid at world coordinates (u, v), (N,) float32."""
    iu = np.floor(np.asarray(u) * (1.0 / cell)).astype(np.int32) & (_TILE_SIZE - 1)
    iv = np.floor(np.asarray(v) * (1.0 / cell)).astype(np.int32) & (_TILE_SIZE - 1)
    return _TILE[iu, iv]

"""CrowdCounter on bad input: grey and RGBA frames are converted, huge frames shrunk, tiny or non-uint8 frames
rejected with a DataError that says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perception.crowd.api import CrowdCounter
from perception.errors import DataError

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "crowd_default"
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_real"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"shared crowd data not found at {REAL}")


@pytest.fixture(scope="module")
def counter() -> CrowdCounter:
    return CrowdCounter(MODEL, threads=1)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.asarray(Image.open(REAL / "brt" / "images" / "brt_1-20160620091226.jpg").convert("RGB"))


def test_grey_and_rgba_frames_count_like_their_rgb_version(counter: CrowdCounter, rgb: np.ndarray) -> None:
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    as_rgb, _ = counter(np.repeat(grey[..., None], 3, axis=2))
    for frame in (grey, grey[..., None]):
        result, small = counter(frame)
        assert small.shape == (512, 288, 3)  # BRT frames are 360x640 portrait
        assert result.count == pytest.approx(as_rgb.count, abs=1e-4)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert counter(rgba)[0].count == pytest.approx(counter(rgb)[0].count, abs=1e-4)


def test_huge_frames_are_shrunk_to_the_model_size(counter: CrowdCounter, rgb: np.ndarray) -> None:
    huge = np.asarray(Image.fromarray(rgb).resize((2880, 5120), Image.BILINEAR))
    result, small = counter(huge)
    assert small.shape == (512, 288, 3)  # BRT frames are 360x640 portrait
    assert result.low <= result.count <= result.high
    assert result.count == pytest.approx(counter(rgb)[0].count, rel=0.15, abs=1.0)


@pytest.mark.parametrize("frame,reason", [
    (np.zeros((40, 300, 3), np.uint8), "smaller than 64"),
    (np.zeros((100, 100, 3), np.float32), "uint8"),
    (np.zeros((100, 100, 2), np.uint8), "image"),
])
def test_unusable_frames_are_data_errors(counter: CrowdCounter, frame: np.ndarray, reason: str) -> None:
    with pytest.raises(DataError, match=reason):
        counter(frame)

"""By-scene split without leaks; real samples load; augmentation keeps the count of heads in the crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.crowd.config import CrowdConfig, CrowdDataConfig
from perception.crowd.data import Augmenter, CrowdSample, list_names, load_sample, scene_of, split_names
from perception.errors import DataError

REPO = Path(__file__).resolve().parents[1]
CROWD = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_sample"
needs_data = pytest.mark.skipif(not CROWD.is_dir(), reason=f"shared crowd data not found at {CROWD}")


def test_scene_of() -> None:
    assert scene_of("scene_005_2") == "scene_005"
    assert scene_of("scene_005_1") == "scene_005"
    assert scene_of("handclick_03") == "handclick_03"


def test_split_is_by_scene_with_synthetic_names() -> None:
    names = [f"scene_{i:03d}_{v}" for i in range(1, 9) for v in (1, 2)] + ["handclick_01", "handclick_02"]
    cfg = CrowdDataConfig(test_scenes=["scene_002", "handclick_01"], val_scenes=["scene_005"])
    split = split_names(names, cfg)
    assert sorted(split["test"]) == ["handclick_01", "scene_002_1", "scene_002_2"]
    assert sorted(split["val"]) == ["scene_005_1", "scene_005_2"]
    assert sum(len(v) for v in split.values()) == len(names)


@needs_data
def test_shipped_split_has_no_scene_leak_and_holds_out_handclicks() -> None:
    cfg = CrowdConfig.from_yaml(REPO / "models" / "crowd_default.yaml")
    split = split_names(list_names(CROWD), cfg.data)
    scenes = {k: {scene_of(n) for n in v} for k, v in split.items()}
    assert not scenes["train"] & scenes["test"]
    assert not scenes["train"] & scenes["val"]
    assert not scenes["val"] & scenes["test"]
    assert any(n.startswith("handclick") for n in split["test"])
    assert any(n.startswith("scene_") for n in split["test"])
    assert sum(len(v) for v in split.values()) == 50


@needs_data
def test_real_sample_loads_resized_with_scaled_points() -> None:
    s = load_sample(CROWD, "handclick_01", 512)
    assert s.image.shape == (384, 512, 3)
    assert s.scale == pytest.approx(0.5)
    assert len(s.points) == s.count == 16
    assert np.all((s.points >= 0) & (s.points <= [512, 384]))


def test_malformed_points_file_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "points").mkdir()
    (tmp_path / "points" / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="x.json"):
        load_sample(tmp_path, "x", 512)
    with pytest.raises(DataError):
        list_names(tmp_path / "nowhere")


def test_augmentation_keeps_heads_inside_the_crop() -> None:
    rng = np.random.default_rng(0)
    pts = np.array([[40.0, 30.0], [50.0, 35.0], [60.0, 32.0], [45.0, 40.0]])  # all near the top-left
    sample = CrowdSample("synthetic", np.full((96, 128, 3), 0.5, np.float32), pts, 4, 1.0)
    aug = Augmenter(CrowdDataConfig(), crop=128, scale_min=1.0, scale_max=1.0, jitter=0.2)
    img, dens = aug(sample, rng)  # a 128-wide crop of a 128x128 (padded-up) image holds every head
    assert img.shape == (3, 128, 128)
    assert dens.shape == (16, 16)
    assert dens.sum() == pytest.approx(4.0, abs=1e-3)
    assert 0.0 <= img.min() and img.max() <= 1.0

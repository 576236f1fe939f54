"""By-scene split without leaks; real samples load; augmentation keeps the count of heads in the crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.crowd.config import CrowdConfig, CrowdDataConfig
from perception.crowd.data import (
    Augmenter,
    CrowdSample,
    WholeFrameAugmenter,
    list_names,
    load_sample,
    paste_people,
    scene_of,
    split_names,
)
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


def test_paste_people_moves_heads_along_their_rows_and_keeps_the_count_exact() -> None:
    rng = np.random.default_rng(3)
    h, w = 120, 200
    img = rng.random((h, w, 3)).astype(np.float32)
    pts = np.array([[30.0, 40.0], [34.0, 44.0], [150.0, 80.0], [100.0, 20.0]])
    before = img.copy(), pts.copy()
    out, new = paste_people(img, pts, np.random.default_rng(0), patches=5, size=(16, 40))
    np.testing.assert_array_equal(img, before[0])  # inputs untouched
    np.testing.assert_array_equal(pts, before[1])
    assert out.shape == img.shape and not np.array_equal(out, img)
    assert ((new >= 0) & (new < [w, h])).all()
    # every head is an original head or one copied along its row, carrying its neighbourhood's pixels with it
    for x, y in new:
        src = [p for p in pts if p[1] == y]
        assert src, f"head at row {y} is not on the row of any original head"
        assert any(np.allclose(out[int(y), int(x)], img[int(y), int(sx)]) or
                   np.allclose(out[int(y), int(x)], img[int(y), int(np.ceil(sx)) - 1]) for sx, _ in src)
    # pasting over heads removes them: a pasted copy of the only head covers nothing else
    one, single = paste_people(img, pts[:1], np.random.default_rng(1), patches=1, size=(16, 16))
    assert len(single) == 2 and (single[:, 1] == pts[0, 1]).all()


def test_paste_people_without_heads_or_patches_is_the_identity() -> None:
    img = np.zeros((64, 64, 3), np.float32)
    out, pts = paste_people(img, np.zeros((0, 2)), np.random.default_rng(0), patches=4)
    assert out is img and len(pts) == 0
    p = np.array([[10.0, 10.0]])
    out, pts = paste_people(img, p, np.random.default_rng(0), patches=0)
    assert out is img and np.array_equal(pts, p)


def test_augmenters_paste_only_when_asked_and_targets_match_the_new_count() -> None:
    rng_img = np.random.default_rng(5)
    pts = np.array([[40.0, 50.0], [120.0, 60.0], [200.0, 55.0]])
    sample = CrowdSample("synthetic", rng_img.random((96, 256, 3)).astype(np.float32), pts, 3, 1.0)
    whole = WholeFrameAugmenter(CrowdDataConfig(), zoom_max=1.0, jitter=0.0, paste_max=6)
    counts = {round(float(whole(sample, np.random.default_rng(s))[1].sum())) for s in range(12)}
    assert max(counts) > 3  # some frames got extra people, and each target sums to its own head count
    crop = Augmenter(CrowdDataConfig(), crop=96, scale_min=1.0, scale_max=1.0, jitter=0.0, paste_max=6)
    a = crop(sample, np.random.default_rng(7), paste=False)
    b = Augmenter(CrowdDataConfig(), crop=96, scale_min=1.0, scale_max=1.0, jitter=0.0)(
        sample, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])  # paste=False: exactly the augmenter without copy-paste

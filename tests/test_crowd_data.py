"""Crowd data: the validation split by camera / scene / time, real samples resized with their points, bad files
as DataErrors naming them, augmented crops that keep the heads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perception.crowd.config import CrowdConfig
from perception.crowd.data import Augmenter, list_names, load_sample, source_of, split_names
from perception.errors import DataError

REPO = Path(__file__).resolve().parents[1]
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_real"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"shared crowd data not found at {REAL}")


def test_source_of_names() -> None:
    assert source_of("brt_1-20170506152447") == "brt"
    assert source_of("shb_train_IMG_1") == "shb"
    assert source_of("mall_0001") == "mall"
    assert source_of("scene_003_1") == "cityuhk"


def test_shipped_split_holds_out_whole_camera_time_blocks() -> None:
    cfg = CrowdConfig.from_yaml(REPO / "models" / "crowd_default.yaml")
    sizes = {}
    for ds in ("brt", "shb", "mall"):
        split = split_names(list_names(REAL / ds), cfg.data.val_patterns[ds])
        assert not set(split["train"]) & set(split["val"])
        sizes[ds] = (len(split["train"]), len(split["val"]))
        if ds == "brt":  # one camera-hour per camera: no image of those hours trains
            hours = {n[:16] for n in split["val"]}
            assert hours == {"brt_1-2017050615", "brt_2-2017050619"}
            assert not any(n[:16] in hours for n in split["train"])
        if ds == "mall":  # the last frames of the time line
            frames = [int(re.sub(r"\D", "", n)) for n in split["val"]]
            assert min(frames) > max(int(re.sub(r"\D", "", n)) for n in split["train"])
    assert sum(t + v for t, v in sizes.values()) == 1320
    assert all(0.1 <= v / (t + v) <= 0.25 for t, v in sizes.values())


def test_real_sample_loads_resized_with_scaled_points() -> None:
    s = load_sample(REAL / "shb", "shb_train_IMG_1", 512, "shb")
    raw = json.loads((REAL / "shb" / "points" / "shb_train_IMG_1.json").read_text())
    assert s.image.shape == (384, 512, 3) and s.image.dtype == np.uint8
    assert s.scale == pytest.approx(0.5)
    assert s.count == len(raw["points"])
    assert np.allclose(s.points, np.asarray(raw["points"]) * 0.5)


def _copy(tmp_path: Path, name: str = "mall_0001") -> Path:
    root = tmp_path / "d"
    for sub in ("images", "points"):
        (root / sub).mkdir(parents=True)
    shutil.copy(REAL / "mall" / "images" / f"{name}.jpg", root / "images")
    shutil.copy(REAL / "mall" / "points" / f"{name}.json", root / "points")
    return root


def test_bad_point_files_are_data_errors_naming_the_file(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    path = root / "points" / "mall_0001.json"
    text = path.read_text()
    for bad in (text[: len(text) // 2], '{"points": [[1, "x"]]}', '{"points": [[1, NaN]]}', "[1, 2]"):
        path.write_text(bad)
        with pytest.raises(DataError, match="mall_0001.json"):
            load_sample(root, "mall_0001", 512)


def test_truncated_tiny_and_grey_images(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    img = root / "images" / "mall_0001.jpg"
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="mall_0001.jpg"):
        load_sample(root, "mall_0001", 512)
    Image.new("RGB", (60, 40)).save(img)
    with pytest.raises(DataError, match="smaller than 64"):
        load_sample(root, "mall_0001", 512)
    Image.open(REAL / "mall" / "images" / "mall_0001.jpg").convert("L").save(img)
    s = load_sample(root, "mall_0001", 512)
    assert s.image.shape == (384, 512, 3)
    assert np.array_equal(s.image[..., 0], s.image[..., 2])  # grey, as three equal channels


def test_augmented_crop_keeps_the_heads_inside_it() -> None:
    cfg = CrowdConfig.from_yaml(REPO / "models" / "crowd_default.yaml")
    s = load_sample(REAL / "brt", "brt_1-20160620091226", 512, "brt")
    aug = Augmenter(cfg.data, 224, 0.7, 1.3, 0.2, grey_prob=0.5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        img, dens = aug(s, rng)
        assert img.shape == (3, 224, 224) and dens.shape == (28, 28)
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert 0.0 <= dens.sum() <= s.count + 1e-3

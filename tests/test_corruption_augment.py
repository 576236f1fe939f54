"""Corruption augmentation as a training option: on in the stage-2 recipe only, validated, applied to real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.detector.config import DetectorConfig
from perception.detector.corruption_augment import check_names, corrupt_sample
from perception.detector.data import SampleDataset, frame_to_sample, save_sample
from perception.errors import ConfigError
from perception.robustness import AUGMENTABLE

REPO = Path(__file__).resolve().parents[1]


def test_on_in_the_shipped_stage_two_recipe_only_and_validated():
    for path in (REPO / "models" / "fusion_default.yaml", REPO / "models" / "fusion_default" / "config.yaml"):
        cfg = DetectorConfig.from_yaml(path)  # stage 2: corruption augmentation from the stage-1 weights
        assert cfg.train.corruption_augment == 0.5 and cfg.train.corruption_augment_names == []
        assert cfg.train.init_from == "models/fusion_sim"
    for path in (REPO / "models" / "fusion_sim.yaml", REPO / "models" / "fusion_sim" / "config.yaml"):
        assert DetectorConfig.from_yaml(path).train.corruption_augment == 0.0  # stage 1: clean frames only
    assert DetectorConfig().train.corruption_augment == 0.0  # off by default
    doc = DetectorConfig().to_dict()
    doc["train"]["corruption_augment"] = 1.5
    with pytest.raises(ConfigError, match="corruption_augment"):
        DetectorConfig.from_dict(doc, "cfg.yaml")
    doc["train"].update(corruption_augment=0.5, corruption_augment_names=["fog"])  # needs a rig: not augmentable
    with pytest.raises(ConfigError, match="valid: beam_reduction"):
        DetectorConfig.from_dict(doc, "cfg.yaml")
    doc["train"]["corruption_augment_names"] = ["point_drop", "missing_camera"]
    assert DetectorConfig.from_dict(doc, "cfg.yaml").train.corruption_augment_names == ["point_drop", "missing_camera"]
    assert check_names([]) == AUGMENTABLE
    assert {"beam_reduction", "point_drop", "motion_blur", "missing_camera"} <= set(AUGMENTABLE)


@pytest.fixture(scope="module")
def kitti_sample_file(kitti_root, tmp_path_factory):
    from perception.io import KittiDataset

    cfg = DetectorConfig.from_yaml(REPO / "models" / "fusion_default.yaml").model
    sample = frame_to_sample(KittiDataset(kitti_root)[1], cfg)
    path = tmp_path_factory.mktemp("samples") / "00000.npz"
    save_sample(path, sample)
    return path, sample, cfg


def test_corrupt_sample_on_a_real_kitti_sample(kitti_sample_file):
    _, s, _ = kitti_sample_file
    out = corrupt_sample(s, ["missing_camera"], np.random.default_rng(0))
    assert out.boxes is s.boxes and out.labels is s.labels and out.lidar2img is s.lidar2img
    assert out.image.shape == s.image.shape and not np.array_equal(out.image, s.image)
    out = corrupt_sample(s, ["point_drop"], np.random.default_rng(0))
    assert len(out.points) < len(s.points) and np.array_equal(out.image, s.image)
    a = corrupt_sample(s, AUGMENTABLE, np.random.default_rng(7))
    b = corrupt_sample(s, AUGMENTABLE, np.random.default_rng(7))
    assert np.array_equal(a.points, b.points) and np.array_equal(a.image, b.image)


def test_dataset_corrupts_training_samples_only_when_enabled(kitti_sample_file):
    path, s, cfg = kitti_sample_file
    plain = SampleDataset([path], cfg, train=True, seed=3)[0]
    off = SampleDataset([path], cfg, train=True, seed=3, corruption_share=0.0, corruption_names=AUGMENTABLE)[0]
    assert np.array_equal(plain[0].pillars.features, off[0].pillars.features)
    on = SampleDataset([path], cfg, train=True, seed=3, corruption_share=1.0, corruption_names=("point_drop",))[0]
    assert on[0].pillars.num_points.sum() < plain[0].pillars.num_points.sum()
    assert np.array_equal(on[2], plain[2])  # the labels are the augmented ones, unchanged by the corruption

"""The whole-frame fine-tuning stage of crowd training: whole-frame targets, frozen BatchNorm, weight averaging,
resuming inside the stage, and extending a finished crop-stage run to the same weights as a run from scratch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import perception.crowd.train as train_mod
from perception.crowd.config import CrowdConfig, CrowdDataConfig
from perception.crowd.data import CrowdSample, WholeFrameAugmenter
from perception.crowd.model import CrowdNet
from perception.errors import ConfigError, ModelError

CROWD = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_sample"
needs_data = pytest.mark.skipif(not CROWD.is_dir(), reason=f"shared crowd data not found at {CROWD}")


def _cfg(whole_steps: int = 4) -> CrowdConfig:
    return CrowdConfig.from_dict({
        "model": {"front_channels": [4, 8, 8], "back_channels": [8], "attention": "combined", "max_side": 128},
        "data": {"root": str(CROWD)},
        "sim": {"cache_dir": ""},
        "train": {"steps": 3, "batch_size": 2, "crop": 64, "eval_every": 2, "checkpoint_every": 2, "seed": 5,
                  "ema_decay": 0.5, "whole_steps": whole_steps, "whole_lr": 1e-2, "whole_warmup_steps": 1,
                  "whole_scale_max": 1.3, "whole_average_from": 0.5},
    })


def _sample(h: int = 100, w: int = 130) -> CrowdSample:
    rng = np.random.default_rng(0)
    pts = np.array([[10.0, 10.0], [60.0, 50.0], [120.0, 90.0], [64.0, 20.0]])
    return CrowdSample("x", rng.random((h, w, 3), dtype=np.float32), pts, len(pts), 1.0)


def test_whole_frame_target_is_the_frame_cut_to_the_stride_and_holds_every_head_without_zoom() -> None:
    aug = WholeFrameAugmenter(CrowdDataConfig(), zoom_max=1.0, jitter=0.0)
    img, dens = aug(_sample(), np.random.default_rng(1))
    assert img.shape == (3, 96, 128) and dens.shape == (12, 16)
    assert dens.sum() == pytest.approx(4.0, abs=1e-3)


def test_whole_frame_zoom_keeps_the_frame_size_and_can_only_lose_heads() -> None:
    aug = WholeFrameAugmenter(CrowdDataConfig(), zoom_max=2.0, jitter=0.2)
    sums = []
    for seed in range(12):
        img, dens = aug(_sample(), np.random.default_rng(seed))
        assert img.shape == (3, 96, 128) and dens.shape == (12, 16)
        assert 0.0 <= img.min() and img.max() <= 1.0
        sums.append(float(dens.sum()))
    assert max(sums) <= 4.0 + 1e-3
    assert min(sums) < 3.9  # zooming in by up to 2x pushes some heads out of some frames


def test_frozen_batchnorm_keeps_its_statistics_but_the_head_still_learns() -> None:
    net = CrowdNet(_cfg().model)
    train_mod.set_train_mode(net, freeze_bn=True)
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    out = net(torch.rand(2, 3, 64, 64))
    assert net.training and not bn.training
    assert torch.equal(bn.running_mean, before)
    out.sum().backward()
    assert net.head.weight.grad is not None and net.head.weight.grad.abs().sum() > 0
    train_mod.set_train_mode(net, freeze_bn=False)
    net(torch.rand(2, 3, 64, 64))
    assert not torch.equal(bn.running_mean, before)


def test_whole_stage_keys_are_validated() -> None:
    doc = _cfg().to_dict()
    for key, bad in (("whole_scale_max", 0.9), ("whole_average_from", 1.0), ("whole_steps", -1)):
        broken = {**doc, "train": {**doc["train"], key: bad}}
        with pytest.raises(ConfigError, match="whole"):
            CrowdConfig.from_dict(broken)


def test_only_whole_stage_changes_are_resumable_and_only_before_that_stage() -> None:
    base = _cfg(whole_steps=0)
    saved = base.to_dict()
    longer = _cfg(whole_steps=4)
    crop_end = base.sim.steps + base.train.steps
    assert train_mod.resumable(saved, longer, crop_end)
    assert not train_mod.resumable(saved, longer, crop_end + 1)
    other = _cfg(whole_steps=4)
    other.train.lr = 0.5
    assert not train_mod.resumable(saved, other, crop_end)


@needs_data
def test_extending_a_finished_run_matches_training_from_scratch_and_resumes_inside_the_stage(
        tmp_path: Path, monkeypatch) -> None:
    threads = torch.get_num_threads()
    try:
        scratch = train_mod.train_crowd(_cfg(), tmp_path / "scratch", progress=False)
        train_mod.train_crowd(_cfg(whole_steps=0), tmp_path / "crop_only", progress=False)
        (tmp_path / "extended").mkdir()
        shutil.copy(tmp_path / "crop_only" / "checkpoint.pt", tmp_path / "extended" / "checkpoint.pt")

        real_save = train_mod.save_training_state

        def save_then_crash(path, net, opt, step, extra):
            real_save(path, net, opt, step, extra)
            if step == 6:  # inside the whole-frame stage (steps 4..7), the weight average begun
                raise KeyboardInterrupt

        monkeypatch.setattr(train_mod, "save_training_state", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            train_mod.train_crowd(_cfg(), tmp_path / "extended", progress=False)
        monkeypatch.setattr(train_mod, "save_training_state", real_save)
        extended = train_mod.train_crowd(_cfg(), tmp_path / "extended", progress=False)
        with pytest.raises(ModelError, match="another config"):  # a finished whole stage cannot be changed
            changed = _cfg(whole_steps=6)
            train_mod.train_crowd(changed, tmp_path / "extended", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert scratch["steps"] == extended["steps"] == 3 + 4
    assert scratch["shipped"] == "whole_average_after_final_ema"
    assert [h["step"] for h in scratch["history"] if h["stage"] == "whole"] == [4, 6, 7]
    assert "val_mae_average" in scratch["history"][-1]
    assert extended["history"] == scratch["history"]
    a = load_file(str(tmp_path / "scratch" / "weights.safetensors"))
    b = load_file(str(tmp_path / "extended" / "weights.safetensors"))
    c = load_file(str(tmp_path / "crop_only" / "weights.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert not torch.allclose(a["head.weight"], c["head.weight"])  # the whole stage did change the weights


@needs_data
def test_model_card_describes_the_whole_frame_stage_and_the_recipe_search(tmp_path: Path) -> None:
    from perception.crowd.checkpoint import load_crowd_model
    from perception.crowd.data import load_split
    from perception.crowd.evaluate import evaluate_samples
    from perception.crowd.model_card import write_model_card

    threads = torch.get_num_threads()
    try:
        cfg = _cfg()
        train_mod.train_crowd(cfg, tmp_path / "m", progress=False)
        net, cfg, interval = load_crowd_model(tmp_path / "m")
        test = evaluate_samples(net, interval, load_split(cfg.data, cfg.model.max_side)["test"][:3])
    finally:
        torch.set_num_threads(threads)
    runs = [{"run": "r9", "recipe": "crop stage + whole frames", "steps": 7, "cpu_min": 0.1, "val_mae": 3.21,
             "train_mae": 1.5, "train_corr": 0.9, "note": "shipped"},
            {"run": "cv", "recipe": "4 folds", "steps": 9, "cpu_min": 2.0, "val_mae": None, "cv_mae": 4.5}]
    text = write_model_card(tmp_path / "m", test, runs=runs).read_text()
    assert "4 steps on **whole** training frames (batch 2, zoomed in by a random factor in [1, 1.3]" in text
    assert "equal-weight average of the whole-frame stage's weights over its last 50% steps" in text
    assert "| r9 | crop stage + whole frames | 7 | 0.1 | 3.21 | - | 1.50 (0.90) | shipped |" in text
    assert "| cv | 4 folds | 9 | 2.0 | - | 4.50 | - |  |" in text
    assert f"| **all** | 3 | {test['mae']:.2f} |" in text

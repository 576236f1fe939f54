"""Crowd training on real images (tiny config) is seeded, dataset-balanced, and resumes from its checkpoint to the
same weights as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import perception.crowd.train as train_mod
from perception.crowd.config import CrowdConfig
from perception.errors import ModelError

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_real"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"shared crowd data not found at {REAL}")


def tiny_config(steps: int = 4, attention: str = "simam", whole_steps: int = 2) -> CrowdConfig:
    """3 real training and 3 validation images of each dataset at 128 px, 64-px crops, then whole frames."""
    return CrowdConfig.from_dict({
        "model": {"front_blocks": 14, "back_channels": [8], "attention": attention, "max_side": 128},
        "data": {"datasets": {d: str(REAL / d) for d in ("brt", "shb", "mall")}, "limit": 3,
                 "val_patterns": {"brt": ["^brt_2"], "shb": ["IMG_3"], "mall": ["^mall_07"]}},
        "train": {"steps": steps, "batch_size": 3, "crop": 64, "eval_every": 2, "checkpoint_every": 2, "seed": 3,
                  "warmup_steps": 1, "ema_decay": 0.9, "threads": 1, "whole_steps": whole_steps},
    })


def test_lr_factor_warms_up_then_decays_to_zero() -> None:
    f = [train_mod.lr_factor(s, 100, 10) for s in range(101)]
    assert f[0] < f[5] < f[9] <= 1.0
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[100] == pytest.approx(0.0, abs=1e-9)
    assert train_mod.lr_factor(0, 4, 100) < 1.0  # a warm-up longer than the run is capped, not an error


def test_batches_take_the_datasets_in_turn() -> None:
    pools = {name: [type("S", (), {"dataset": name})()] for name in ("brt", "mall", "shb")}
    rng = np.random.default_rng(0)
    seen = [s.dataset for step in range(3) for s in train_mod.balanced_batch(pools, step, 4, rng)]
    assert {d: seen.count(d) for d in pools} == {"brt": 4, "mall": 4, "shb": 4}


def test_pretrained_front_end_is_loaded_and_frozen_blocks_get_no_gradient() -> None:
    from perception.crowd.pretrained import load_mobilenet_v2

    cfg = tiny_config()
    net = train_mod.build_net(cfg)
    ref = load_mobilenet_v2()
    assert torch.equal(net.front[0][0].weight, ref["features.0.0.weight"])
    assert torch.equal(net.deep[-1].conv[0].weight, ref["features.13.conv.0.weight"])
    frozen = net.backbone_modules()[:cfg.model.freeze_blocks]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    opt = train_mod.make_optimizer(net, cfg)
    assert [g["lr"] for g in opt.param_groups] == [cfg.train.backbone_lr, cfg.train.lr]


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, monkeypatch) -> None:
    threads = torch.get_num_threads()
    try:
        first = train_mod.train_crowd(tiny_config(), tmp_path / "a", progress=False)
        reference = load_file(str(tmp_path / "a" / "weights.safetensors"))
        real_save = train_mod.save_training_state

        def save_then_crash(path, net, opt, step, extra):
            real_save(path, net, opt, step, extra)
            if step == 2:  # the machine dies right after this checkpoint
                raise KeyboardInterrupt

        monkeypatch.setattr(train_mod, "save_training_state", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            train_mod.train_crowd(tiny_config(), tmp_path / "b", progress=False)
        assert not (tmp_path / "b" / "weights.safetensors").exists()
        monkeypatch.setattr(train_mod, "save_training_state", real_save)
        summary = train_mod.train_crowd(tiny_config(), tmp_path / "b", progress=False)
        with pytest.raises(ModelError, match="another config"):
            train_mod.train_crowd(tiny_config(steps=6), tmp_path / "b", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary["steps"] == first["steps"] == 6
    assert [h["val_mae"] for h in summary["history"]] == [h["val_mae"] for h in first["history"]]
    resumed = load_file(str(tmp_path / "b" / "weights.safetensors"))
    for key in reference:
        assert torch.allclose(resumed[key], reference[key], atol=1e-6), key
    assert set(summary["val"]["per_source"]) == {"brt", "shb", "mall"}
    assert all(m["n"] == 3 for m in summary["val"]["per_source"].values())
    assert summary["split"]["brt"]["val"] == sorted(summary["split"]["brt"]["val"])
    assert all(n.startswith("brt_2") for n in summary["split"]["brt"]["val"])
    assert not any(n.startswith("brt_2") for n in summary["split"]["brt"]["train"])


def test_only_whole_frame_changes_resume_and_only_before_that_stage() -> None:
    saved = tiny_config(whole_steps=0).to_dict()
    assert train_mod.resumable(saved, tiny_config(whole_steps=5), step=4)
    assert not train_mod.resumable(saved, tiny_config(whole_steps=5), step=5)
    assert not train_mod.resumable(saved, tiny_config(steps=6, whole_steps=0), step=4)


def test_whole_frames_keep_every_head_and_the_inference_size() -> None:
    from perception.crowd.data import load_sample, whole_frame

    cfg = tiny_config()
    s = load_sample(REAL / "brt", "brt_1-20160620091226", 512, "brt")
    img, dens, pts = whole_frame(s, cfg.data, 0.2, 0.5, np.random.default_rng(0))
    assert img.shape == (3, 512, 288) and dens.shape == (64, 36)  # BRT frames are 360x640 portrait
    assert dens.sum() == pytest.approx(s.count, abs=1e-3) and len(pts) == s.count


def test_whole_frame_schedules() -> None:
    from perception.crowd.config import CrowdTrainConfig

    const = CrowdTrainConfig(steps=10, whole_steps=5, lr=1e-3, whole_lr=2e-4, warmup_steps=2)
    assert train_mod.schedule_factor(3, const) == train_mod.lr_factor(3, 10, 2)
    assert [train_mod.schedule_factor(s, const) for s in range(10, 15)] == pytest.approx([0.2] * 5)
    only = CrowdTrainConfig(steps=0, whole_steps=100, lr=1e-3, whole_lr=1e-3, warmup_steps=10,
                            whole_schedule="cosine")
    f = [train_mod.schedule_factor(s, only) for s in range(101)]
    assert f[0] < f[9] <= 1.0  # warm-up when there is no crop stage
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[100] == pytest.approx(0.0, abs=1e-9)
    after = CrowdTrainConfig(steps=10, whole_steps=10, whole_schedule="cosine", warmup_steps=5)
    assert train_mod.schedule_factor(10, after) == pytest.approx(after.whole_lr / after.lr)  # no second warm-up


def test_whole_frame_only_training_runs(tmp_path: Path) -> None:
    doc = tiny_config(steps=0, whole_steps=3).to_dict()
    doc["train"].update(whole_schedule="cosine", whole_scale=0.2, whole_loss="bayesian")
    threads = torch.get_num_threads()
    try:
        summary = train_mod.train_crowd(CrowdConfig.from_dict(doc), tmp_path, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary["steps"] == 3 and (tmp_path / "weights.safetensors").is_file()
    doc["train"]["whole_steps"] = 0
    with pytest.raises(Exception, match="steps \\+ whole_steps"):
        CrowdConfig.from_dict(doc)


def test_scaled_whole_frames_keep_every_head() -> None:
    from perception.crowd.data import CrowdSample, load_sample, whole_frame

    cfg = tiny_config()
    real = load_sample(REAL / "shb", "shb_train_IMG_1", 512, "shb")
    pts = np.random.default_rng(0).uniform(150, 250, (40, 2))  # heads well inside the frame: none is trimmed
    s = CrowdSample(name="x", image=real.image[:400, :400], points=pts, count=40, scale=1.0, dataset="shb")
    sizes = set()
    for seed in range(4):
        img, dens, pts = whole_frame(s, cfg.data, 0.0, 0.0, np.random.default_rng(seed), scale_jitter=0.3)
        assert img.shape[1] % 16 == 0 and img.shape[2] % 16 == 0
        assert dens.shape == (img.shape[1] // 8, img.shape[2] // 8)
        assert dens.sum() == pytest.approx(40, abs=1e-3) and len(pts) == 40
        sizes.add(img.shape)
    assert len(sizes) > 1 and all(280 <= h <= 520 for _, h, _ in sizes)

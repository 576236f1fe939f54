"""Crowd training (optionally simulated pre-training, then real images mixed with simulated ones) is seeded and
resumes from its checkpoint to the same weights as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import perception.crowd.train as train_mod
from perception.crowd.config import CrowdConfig
from perception.errors import ModelError

CROWD = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_sample"
pytestmark = pytest.mark.skipif(not CROWD.is_dir(), reason=f"shared crowd data not found at {CROWD}")


def _cfg(cache: Path | None = None) -> CrowdConfig:
    return CrowdConfig.from_dict({
        "model": {"front_channels": [4, 8, 8], "back_channels": [8], "attention": "combined", "max_side": 128},
        "data": {"root": str(CROWD)},
        "sim": {"cache_dir": str(cache) if cache else ""},
        "train": {"steps": 4, "batch_size": 2, "crop": 64, "eval_every": 100, "checkpoint_every": 2, "seed": 3},
    })


def _ema_cfg(cache: Path | None = None) -> CrowdConfig:
    cfg = _cfg(cache)
    cfg.train.ema_decay = 0.9
    cfg.train.warmup_steps = 1
    cfg.train.eval_every = 1
    cfg.train.select_best = True
    cfg.train.select_window = 2
    return cfg


def _sim_cfg(cache: Path | None = None) -> CrowdConfig:
    """2 pre-training steps on 2 simulated scenes, then 4 real-image steps with half of each batch simulated, an
    average of the weights and BatchNorm statistics recalibrated on the real training images."""
    cfg = _cfg(cache)
    cfg.sim.steps, cfg.sim.scenes, cfg.sim.people_max = 2, 2, 10
    cfg.train.sim_fraction, cfg.train.recalibrate_bn, cfg.train.ema_decay = 0.5, True, 0.5
    return cfg


def test_lr_factor_warms_up_then_decays_to_zero() -> None:
    f = [train_mod.lr_factor(s, 100, 10) for s in range(101)]
    assert f[0] < f[5] < f[9] <= 1.0
    assert max(f) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[100] == pytest.approx(0.0, abs=1e-9)
    assert train_mod.lr_factor(0, 4, 100) < 1.0  # a warm-up longer than the run is capped, not an error


def test_ema_update_averages_parameters_and_buffers() -> None:
    from perception.crowd.model import CrowdNet

    cfg = _cfg().model
    a, b = CrowdNet(cfg), CrowdNet(cfg)
    key = "head.weight"
    expected = 0.75 * a.state_dict()[key] + 0.25 * b.state_dict()[key]
    train_mod.ema_update(a, b, 0.75)
    assert torch.allclose(a.state_dict()[key], expected)


@pytest.mark.parametrize("make_cfg,crash_at", [(_cfg, 2), (_ema_cfg, 2), (_sim_cfg, 4)],
                         ids=["plain", "ema_select_best", "sim_pretrain_mix_ema"])
def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, monkeypatch, make_cfg, crash_at) -> None:
    threads = torch.get_num_threads()
    cache = tmp_path / "sim"
    try:
        first = train_mod.train_crowd(make_cfg(cache), tmp_path / "a", progress=False)
        reference = load_file(str(tmp_path / "a" / "weights.safetensors"))

        real_save = train_mod.save_training_state

        def save_then_crash(path, net, opt, step, extra):
            real_save(path, net, opt, step, extra)
            if step == crash_at:  # the machine dies right after this checkpoint
                raise KeyboardInterrupt

        monkeypatch.setattr(train_mod, "save_training_state", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            train_mod.train_crowd(make_cfg(cache), tmp_path / "b", progress=False)
        assert not (tmp_path / "b" / "weights.safetensors").exists()
        monkeypatch.setattr(train_mod, "save_training_state", real_save)
        summary = train_mod.train_crowd(make_cfg(cache), tmp_path / "b", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary["steps"] == first["steps"] == 4 + make_cfg().sim.steps
    assert summary["history"] == first["history"]
    resumed = load_file(str(tmp_path / "b" / "weights.safetensors"))
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.allclose(resumed[key], reference[key], atol=1e-6), key


def test_simulated_stage_is_evaluated_apart_from_the_real_one(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        summary = train_mod.train_crowd(_sim_cfg(tmp_path / "sim"), tmp_path / "m", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [h["stage"] for h in summary["history"]] == ["sim", "real"]  # evaluated at the end of each stage
    assert summary["sim_steps"] == 2 and summary["val_mae_after_sim"] == summary["history"][0]["val_mae"]
    assert summary["cpu_seconds"] > 0


def test_a_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    cfg = _cfg()
    cfg.train.steps = 2
    try:
        train_mod.train_crowd(cfg, tmp_path / "m", progress=False)
        cfg.model.back_channels = [12]
        with pytest.raises(ModelError, match="checkpoint.pt"):
            train_mod.train_crowd(cfg, tmp_path / "m", progress=False)
    finally:
        torch.set_num_threads(threads)


def test_a_checkpoint_written_before_config_keys_were_added_still_resumes() -> None:
    from perception.crowd.train import resumable

    cfg = CrowdConfig()
    old = cfg.to_dict()
    del old["train"]["paste_max"], old["data"]["train_on_val"]  # keys added later, at their defaults
    assert resumable(old, cfg, 0)
    changed = CrowdConfig.from_dict(cfg.to_dict())
    changed.train.paste_max = 4
    assert not resumable(old, changed, 0)
    old["train"]["no_such_key"] = 1
    assert not resumable(old, cfg, 0)

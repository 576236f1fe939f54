"""Crowd training is seeded and resumes from its checkpoint to the same weights as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import perception.crowd.train as train_mod
from perception.crowd.config import CrowdConfig

CROWD = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_sample"
pytestmark = pytest.mark.skipif(not CROWD.is_dir(), reason=f"shared crowd data not found at {CROWD}")


def _cfg() -> CrowdConfig:
    return CrowdConfig.from_dict({
        "model": {"front_channels": [4, 8, 8], "back_channels": [8], "attention": "combined", "max_side": 128},
        "data": {"root": str(CROWD)},
        "train": {"steps": 4, "batch_size": 2, "crop": 64, "eval_every": 100, "checkpoint_every": 2, "seed": 3},
    })


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, monkeypatch) -> None:
    threads = torch.get_num_threads()
    try:
        train_mod.train_crowd(_cfg(), tmp_path / "a", progress=False)
        reference = load_file(str(tmp_path / "a" / "weights.safetensors"))

        real_save = train_mod.save_training_state

        def save_then_crash(path, net, opt, step, extra):
            real_save(path, net, opt, step, extra)
            raise KeyboardInterrupt  # the machine dies right after the step-2 checkpoint

        monkeypatch.setattr(train_mod, "save_training_state", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            train_mod.train_crowd(_cfg(), tmp_path / "b", progress=False)
        assert not (tmp_path / "b" / "weights.safetensors").exists()
        monkeypatch.setattr(train_mod, "save_training_state", real_save)
        summary = train_mod.train_crowd(_cfg(), tmp_path / "b", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary["steps"] == 4
    resumed = load_file(str(tmp_path / "b" / "weights.safetensors"))
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.allclose(resumed[key], reference[key], atol=1e-6), key

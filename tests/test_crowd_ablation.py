"""The SimAM ablation driver (experiments/): both variants on the same split and budget, finished runs reused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments.crowd_ablation import ablation_config, finished_summary, run_ablation
from perception.crowd.config import CrowdConfig

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_real"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"shared crowd data not found at {REAL}")


def test_both_variants_train_on_the_same_split_and_a_finished_run_is_reused(tmp_path: Path) -> None:
    cfg = CrowdConfig.from_dict({
        "model": {"back_channels": [8], "max_side": 128},
        "data": {"datasets": {d: str(REAL / d) for d in ("brt", "mall")}, "limit": 2,
                 "val_patterns": {"brt": ["^brt_2"], "mall": ["^mall_07"]}},
        "train": {"steps": 2, "batch_size": 2, "crop": 64, "eval_every": 2, "threads": 1, "whole_steps": 5},
    })
    threads = torch.get_num_threads()
    try:
        result = run_ablation(cfg, tmp_path, steps=2, whole_steps=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [r["attention"] for r in result["runs"]] == ["simam", "none"]
    assert all(r["steps"] == 3 for r in result["runs"])
    assert all(set(r["val"]["per_source"]) == {"brt", "mall"} for r in result["runs"])
    done = finished_summary(ablation_config(cfg, "none", 2, 1), tmp_path / "ablation_none")
    other = finished_summary(ablation_config(cfg, "simam", 2, 1), tmp_path / "ablation_simam")
    assert done is not None and other is not None and done["steps"] == 3
    assert done["split"] == other["split"] and len(done["val_images"]) == 4
    assert [r["image"] for r in done["val_images"]] == [r["image"] for r in other["val_images"]]
    assert finished_summary(ablation_config(cfg, "none", 3, 1), tmp_path / "ablation_none") is None

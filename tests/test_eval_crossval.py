"""K-fold cross-validation on real KITTI frames: the folds, per-fold fine-tuning of the shipped weights, and the
out-of-fold metrics document and report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from perception.cli import main
from perception.detector.checkpoint import load_model
from perception.detector.finetune import finetune
from perception.errors import ConfigError
from perception.eval.crossval import kfold
from perception.io import KittiDataset

MODEL = Path(__file__).resolve().parents[1] / "models" / "fusion_default"


def test_kfold_partitions_every_frame_once():
    parts = kfold(8, 3, seed=0)
    assert [len(p) for p in parts] == [3, 3, 2]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(8))
    assert [p.tolist() for p in kfold(8, 3, seed=0)] == [p.tolist() for p in parts]  # seeded
    assert [p.tolist() for p in kfold(8, 3, seed=1)] != [p.tolist() for p in parts]
    with pytest.raises(ConfigError, match="folds"):
        kfold(3, 4)
    with pytest.raises(ConfigError, match="folds"):
        kfold(3, 1)


def test_finetune_changes_a_copy_only(kitti_root):
    net, cfg, _ = load_model(MODEL)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tuned = finetune(net, list(KittiDataset(kitti_root))[:2], cfg, steps=1, seed=0)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the shipped weights are untouched
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and not any("running_" in k for k in changed)  # trained, BatchNorm statistics frozen
    assert not tuned.training


def test_crossval_command_reports_out_of_fold_metrics(kitti_root, tmp_path, capsys):
    out = tmp_path / "cv.json"
    rc = main(["crossval", "--model", str(MODEL), "--data", str(kitti_root), "--folds", "3", "--steps", "1",
               "--json", str(out), "--report", str(tmp_path / "report")])
    assert rc == 0
    m = json.loads(out.read_text())
    ids = [f.frame_id for f in KittiDataset(kitti_root)]
    assert sorted(i for fold in m["folds"]["frames"] for i in fold) == ids and m["folds"]["k"] == 3
    assert m["finetune"]["steps"] == 1 and m["finetune"]["seeds"] == [0, 1, 2]
    assert m["frames"] == 3 and m["num_gt"]["Car"] + m["num_gt"]["Pedestrian"] >= 1
    for key in ("ap3d", "ap3d_r40", "apbev", "apbev_r40", "ap3d_by_range", "dece_after", "coverage_1sigma",
                "fp_per_frame_p50"):
        assert key in m
    assert sorted(p.name for p in (tmp_path / "report").glob("frame_*.png")) == [f"frame_{i}.png" for i in ids]
    assert "out-of-fold" in capsys.readouterr().out

"""Cross-validation folds of the crowd training scenes (by scene) and folds started from a shared simulated-stage
checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import perception.crowd.train as train_mod
from perception.crowd.checkpoint import load_crowd_model
from perception.crowd.config import CrowdConfig
from perception.crowd.crossval import (
    fold_config,
    interval_from_crossval,
    run_crossval,
    scene_folds,
    seed_from_sim_checkpoint,
)
from perception.crowd.crossval import (
    main as crossval_main,
)
from perception.crowd.data import list_names, scene_of, source_of, split_names
from perception.errors import ModelError

CROWD = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_sample"
pytestmark = pytest.mark.skipif(not CROWD.is_dir(), reason=f"shared crowd data not found at {CROWD}")
REPO = Path(__file__).resolve().parents[1]


def test_folds_partition_the_training_scenes_and_keep_views_together() -> None:
    cfg = CrowdConfig.from_yaml(REPO / "models" / "crowd_default.yaml")
    cfg.data.root = str(CROWD)
    names = list_names(CROWD)
    split = split_names(names, cfg.data)
    folds = scene_folds(cfg, names, 4, seed=0)
    scenes = [s for f in folds for s in f]
    assert sorted(scenes) == sorted({scene_of(n) for n in split["train"]}) and len(set(scenes)) == len(scenes)
    assert all(any(source_of(s) == "handclick" for s in f) for f in folds)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert scene_folds(cfg, names, 4, seed=0) == folds and scene_folds(cfg, names, 4, seed=1) != folds
    for fold in folds:
        fsplit = split_names(names, fold_config(cfg, fold).data)
        assert {scene_of(n) for n in fsplit["val"]} == set(fold)
        assert all(n.endswith(("_1", "_2")) for n in fsplit["val"] if n.startswith("scene_"))
        assert sum(n.startswith("scene_") for n in fsplit["val"]) == 2 * sum(s.startswith("scene_") for s in fold)
        assert not set(fsplit["train"]) & (set(split["val"]) | set(split["test"]))
    with pytest.raises(ValueError):
        scene_folds(cfg, names, 1)


def _cfg(cache: Path) -> CrowdConfig:
    return CrowdConfig.from_dict({
        "model": {"front_channels": [4, 8, 8], "back_channels": [8], "attention": "combined", "max_side": 128},
        "data": {"root": str(CROWD)},
        "sim": {"steps": 2, "scenes": 2, "people_max": 10, "cache_dir": str(cache)},
        "train": {"steps": 3, "batch_size": 2, "crop": 64, "eval_every": 100, "checkpoint_every": 100, "seed": 2,
                  "sim_fraction": 0.5, "whole_steps": 2},
    })


def test_a_fold_started_from_a_shared_simulated_stage_checkpoint_trains_as_from_scratch(tmp_path: Path,
                                                                                         monkeypatch) -> None:
    base = _cfg(tmp_path / "sim")
    names = list_names(CROWD)
    fold = fold_config(base, scene_folds(base, names, 3)[0])
    threads = torch.get_num_threads()
    real_save = train_mod.save_training_state

    def save_then_stop(path, net, opt, step, extra):
        real_save(path, net, opt, step, extra)
        if step == 2:  # the end of the simulated stage
            raise KeyboardInterrupt

    try:
        train_mod.train_crowd(fold, tmp_path / "scratch", progress=False)
        monkeypatch.setattr(train_mod, "save_training_state", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train_mod.train_crowd(base, tmp_path / "base", progress=False)
        monkeypatch.setattr(train_mod, "save_training_state", real_save)
        seed_from_sim_checkpoint(tmp_path / "base" / "checkpoint.pt", fold, tmp_path / "seeded")
        train_mod.train_crowd(fold, tmp_path / "seeded", progress=False)
        other = _cfg(tmp_path / "sim")
        other.train.lr = 0.5
        with pytest.raises(ModelError, match="another recipe"):
            seed_from_sim_checkpoint(tmp_path / "base" / "checkpoint.pt", fold_config(other, ["scene_001"]),
                                     tmp_path / "x")
    finally:
        torch.set_num_threads(threads)
    a = load_file(str(tmp_path / "scratch" / "weights.safetensors"))
    b = load_file(str(tmp_path / "seeded" / "weights.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_crossval_holds_out_every_training_image_once_per_recipe_and_shares_the_crop_stages(tmp_path: Path) -> None:
    a = _cfg(tmp_path / "sim")
    a.sim.steps, a.train.sim_fraction, a.train.steps = 0, 0.0, 2
    b = CrowdConfig.from_dict(a.to_dict())
    b.train.whole_lr = 0.05
    threads = torch.get_num_threads()
    try:
        report = run_crossval({"a": a, "b": b}, tmp_path / "cv", k=2, progress=False)
        bad = CrowdConfig.from_dict(a.to_dict())
        bad.train.lr = 0.5
        with pytest.raises(ValueError, match="more than the whole-frame stage"):
            run_crossval({"a": a, "bad": bad}, tmp_path / "cv2", k=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    train = split_names(list_names(CROWD), a.data)["train"]
    assert set(report["recipes"]) == {"crop", "a", "b"}
    for r in report["recipes"].values():
        held = [n for run in r["runs"] for n in run["images"]]
        assert sorted(held) == sorted(train) and r["n"] == len(train)
    mae_a = report["recipes"]["a"]["fold_mae"]
    assert mae_a != report["recipes"]["crop"]["fold_mae"] and mae_a != report["recipes"]["b"]["fold_mae"]
    assert (tmp_path / "cv" / "fold1" / "b" / "weights.safetensors").is_file()
    assert json.loads((tmp_path / "cv" / "crossval.json").read_text())["k"] == 2


def test_folds_spread_over_runs_give_one_report_and_a_final_fit_gets_the_out_of_fold_interval(
        tmp_path: Path) -> None:
    a = _cfg(tmp_path / "sim")
    a.sim.steps, a.train.sim_fraction, a.train.steps = 0, 0.0, 2
    a.data.train_on_val = True  # a final-fit recipe: its folds must still never train on their held-out scenes
    cfg_path = tmp_path / "final.yaml"
    a.to_yaml(cfg_path)
    threads = torch.get_num_threads()
    try:
        whole = run_crossval({"final": a}, tmp_path / "cv_one", k=2, progress=False)
        part = run_crossval({"final": a}, tmp_path / "cv_split", k=2, progress=False, only_folds=[1])
        assert part["recipes"] == {} and not (tmp_path / "cv_split" / "crossval.json").exists()
        train_mod.train_crowd(a, tmp_path / "model", progress=False)
        summary = json.loads((tmp_path / "model" / "training.json").read_text())
        crossval_main(["--config", str(cfg_path), "--out", str(tmp_path / "cv_split"), "--k", "2", "--quiet",
                       "--interval-into", str(tmp_path / "model")])
    finally:
        torch.set_num_threads(threads)
    split = json.loads((tmp_path / "cv_split" / "crossval.json").read_text())
    assert split["recipes"]["final"]["fold_mae"] == pytest.approx(whole["recipes"]["final"]["fold_mae"])
    for run in whole["recipes"]["final"]["runs"]:
        fold_train = json.loads((tmp_path / "cv_one" / f"fold{run['fold']}" / "final" / "training.json")
                                .read_text())["split"]["train"]
        assert not set(fold_train) & set(run["images"])  # held-out images never trained
    names = split_names(list_names(CROWD), a.data)
    assert summary["train_on_val"] and set(names["val"]) <= set(summary["split"]["train"])
    expected = interval_from_crossval(whole, "final", a.train.interval_level)
    _, _, interval = load_crowd_model(tmp_path / "model")  # manifest still verifies after the replacement
    assert interval.phi == pytest.approx(expected.phi) and interval.fitted_on == len(names["train"])
    with pytest.raises(ValueError, match="not in the report"):
        interval_from_crossval(whole, "nope", 0.9)

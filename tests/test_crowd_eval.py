"""The shipped crowd model: eval CLI per dataset (validation images only of a training dataset), corrupt weights,
ONNX parity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from perception.cli import main
from perception.crowd.checkpoint import WEIGHTS_FILE, load_crowd_model
from perception.crowd.config import CrowdConfig
from perception.crowd.data import list_names, split_names
from perception.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "crowd_default"
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_real"
needs_data = pytest.mark.skipif(not REAL.is_dir(), reason=f"shared crowd data not found at {REAL}")


@needs_data
def test_eval_cli_on_a_training_dataset_uses_only_its_validation_images(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert main(["eval-crowd", "--model", str(MODEL), "--data", str(REAL / "mall"), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    cfg = CrowdConfig.from_yaml(MODEL / "config.yaml")
    expected = split_names(list_names(REAL / "mall"), cfg.data.val_patterns["mall"])["val"]
    assert sorted(r["image"] for r in report["images"]) == sorted(expected)
    assert report["split"] == "val" and list(report["per_source"]) == ["mall"]
    errors = np.array([r["pred"] - r["gt"] for r in report["images"]])
    assert report["mae"] == pytest.approx(np.abs(errors).mean(), abs=1e-2)
    assert report["rmse"] == pytest.approx(np.sqrt((errors ** 2).mean()), abs=1e-2)
    m = report["per_source"]["mall"]
    gts = np.array([r["gt"] for r in report["images"]])
    assert m["baseline_median_mae"] == pytest.approx(np.abs(gts - np.median(gts)).mean())
    assert all(r["low"] <= r["pred"] <= r["high"] for r in report["images"])
    html = (out / "report.html").read_text()
    assert "scatter.png" in html and "overlays_mall.png" in html
    assert (out / "scatter.png").stat().st_size > 10_000 and (out / "overlays_mall.png").stat().st_size > 10_000


@needs_data
def test_eval_on_another_folder_evaluates_every_image_per_dataset(tmp_path: Path) -> None:
    data = tmp_path / "d"
    for sub in ("images", "points"):
        (data / sub).mkdir(parents=True)
    for ds, name in (("shb", "shb_train_IMG_1"), ("brt", "brt_1-20160620091226")):
        shutil.copy(REAL / ds / "images" / f"{name}.jpg", data / "images")
        shutil.copy(REAL / ds / "points" / f"{name}.json", data / "points")
    out = tmp_path / "e"
    assert main(["eval-crowd", "--model", str(MODEL), "--data", str(data), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["split"] == "all"
    assert sorted(report["per_source"]) == ["brt", "shb"]
    assert sorted(r["image"] for r in report["images"]) == ["brt_1-20160620091226", "shb_train_IMG_1"]


def test_shipped_weights_are_small_and_load() -> None:
    assert (MODEL / WEIGHTS_FILE).stat().st_size <= 10 * 1024 * 1024
    net, cfg, interval = load_crowd_model(MODEL)
    assert not net.training
    assert interval.phi > 0


def test_corrupt_weights_raise_model_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "m"
    shutil.copytree(MODEL, bad, ignore=shutil.ignore_patterns("*.onnx", "checkpoint.pt"))
    (bad / "manifest.json").unlink()  # without the manifest the safetensors reader itself must complain
    data = bytearray((bad / WEIGHTS_FILE).read_bytes())
    (bad / WEIGHTS_FILE).write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ModelError, match=WEIGHTS_FILE):
        load_crowd_model(bad)


def test_modified_weights_fail_the_manifest_check(tmp_path: Path) -> None:
    bad = tmp_path / "m"
    shutil.copytree(MODEL, bad, ignore=shutil.ignore_patterns("*.onnx", "checkpoint.pt"))
    data = bytearray((bad / WEIGHTS_FILE).read_bytes())
    data[-10] ^= 0xFF
    (bad / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_crowd_model(bad)


def test_weights_of_another_shape_raise_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "m"
    shutil.copytree(MODEL, bad, ignore=shutil.ignore_patterns("*.onnx", "checkpoint.pt"))
    (bad / "manifest.json").unlink()
    cfg = CrowdConfig.from_yaml(bad / "config.yaml")
    cfg.model.back_channels = [c + 8 for c in cfg.model.back_channels]
    cfg.to_yaml(bad / "config.yaml")
    with pytest.raises(ModelError, match="do not match"):
        load_crowd_model(bad)


def test_shipped_onnx_matches_pytorch() -> None:
    from perception.crowd.export import parity

    onnx_path = MODEL / "model.onnx"
    assert onnx_path.is_file(), "run `python -m perception.crowd.export models/crowd_default`"
    net, _, _ = load_crowd_model(MODEL)
    diff = parity(net, onnx_path, sizes=((384, 512), (208, 336)))
    assert diff["max_abs_density"] < 1e-4
    assert diff["max_abs_count"] < 1e-2


def test_shipped_onnx_is_in_the_manifest() -> None:
    from perception.detector.checkpoint import sha256

    doc = json.loads((MODEL / "manifest.json").read_text())
    assert doc["model.onnx"]["sha256"] == sha256(MODEL / "model.onnx")


def test_export_records_the_onnx_and_retraining_removes_it(tmp_path: Path) -> None:
    import torch

    from perception.crowd.checkpoint import save_crowd_model
    from perception.crowd.config import CrowdModelConfig
    from perception.crowd.export import export_model_dir
    from perception.crowd.interval import CountInterval
    from perception.crowd.model import CrowdNet

    threads = torch.get_num_threads()
    cfg = CrowdConfig(model=CrowdModelConfig(front_blocks=7, back_channels=[8], max_side=128))
    try:
        save_crowd_model(CrowdNet(cfg.model), cfg, tmp_path, CountInterval())
        path, diff = export_model_dir(tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert diff["max_abs_count"] < 1e-2
    assert "model.onnx" in json.loads((tmp_path / "manifest.json").read_text())
    load_crowd_model(tmp_path)  # the manifest still verifies
    save_crowd_model(CrowdNet(cfg.model), cfg, tmp_path, CountInterval())  # new weights: the ONNX is stale
    assert not path.exists() and "model.onnx" not in json.loads((tmp_path / "manifest.json").read_text())

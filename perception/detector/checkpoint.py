"""A model directory: resolved config, weights (safetensors), calibration, manifest with sha256."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from perception.detector.config import DetectorConfig
from perception.detector.model import FusionNet
from perception.errors import ConfigError, ModelError
from perception.trust.calibration import Calibration

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.safetensors"
CALIBRATION_FILE = "calibration.json"
MANIFEST_FILE = "manifest.json"


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(model_dir: Path) -> None:
    """Record the sha256 of every artifact in the directory (except checkpoints and the manifest)."""
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    doc = {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files}
    (model_dir / MANIFEST_FILE).write_text(json.dumps(doc, indent=2) + "\n")


def verify_manifest(model_dir: Path, names: Iterable[str]) -> None:
    """Raise ModelError when a listed artifact does not match its recorded sha256 (files the manifest does not
    list, or a directory without a manifest, pass)."""
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        return  # a model directory being assembled (training) has no manifest yet
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise ModelError(f"unreadable manifest: {exc}", str(path)) from exc
    for name in names:
        entry = doc.get(name)
        if entry and sha256(model_dir / name) != entry.get("sha256"):
            raise ModelError("file does not match the sha256 in manifest.json (corrupt or modified)",
                             str(model_dir / name))


def save_model(net: FusionNet, cfg: DetectorConfig, model_dir: Path, calibration: Calibration | None = None) -> None:
    """Write config, weights and calibration into ``model_dir``."""
    model_dir.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(model_dir / CONFIG_FILE)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(model_dir / WEIGHTS_FILE), metadata={"model": cfg.model.name})
    (calibration or Calibration()).save(model_dir / CALIBRATION_FILE)


def load_model(model_dir: str | Path) -> tuple[FusionNet, DetectorConfig, Calibration]:
    """Load a model directory; corrupt, missing or mismatched files raise ModelError naming them."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError("model directory not found", str(model_dir))
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (model_dir / name).is_file():
            raise ModelError("missing file", str(model_dir / name))
    verify_manifest(model_dir, [CONFIG_FILE, WEIGHTS_FILE, CALIBRATION_FILE])
    try:
        cfg = DetectorConfig.from_yaml(model_dir / CONFIG_FILE)
    except ConfigError as exc:
        raise ModelError(str(exc), str(model_dir / CONFIG_FILE)) from exc
    weights = model_dir / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"corrupt weights file: {exc}", str(weights)) from exc
    net = FusionNet(cfg.model)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or extra or wrong:
        detail = "; ".join(x for x in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
            f"shape mismatch {wrong[:3]}" if wrong else "") if x)
        raise ModelError(f"weights do not match the config (from another config?): {detail}", str(weights))
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    net.eval()
    cal_path = model_dir / CALIBRATION_FILE
    calibration = Calibration.load(cal_path) if cal_path.is_file() else Calibration()
    return net, cfg, calibration


def torch_inputs(inputs: dict) -> dict[str, torch.Tensor]:
    """Numpy network inputs → tensors."""
    return {k: torch.from_numpy(v) for k, v in inputs.items()}

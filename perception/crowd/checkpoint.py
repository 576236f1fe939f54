"""A crowd model directory: ``config.yaml``, ``weights.safetensors``, ``interval.json``, ``manifest.json``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from perception.crowd.config import CrowdConfig
from perception.crowd.interval import CountInterval
from perception.crowd.model import CrowdNet
from perception.detector.checkpoint import MANIFEST_FILE, sha256, verify_manifest
from perception.errors import ConfigError, ModelError

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.safetensors"
INTERVAL_FILE = "interval.json"
ONNX_FILE = "model.onnx"  # written by perception.crowd.export, which adds it to the manifest
_HASHED = (CONFIG_FILE, WEIGHTS_FILE, INTERVAL_FILE)


def save_crowd_model(net: CrowdNet, cfg: CrowdConfig, model_dir: str | Path, interval: CountInterval) -> None:
    """Write config, weights, interval and a sha256 manifest into ``model_dir``."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(model_dir / CONFIG_FILE)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(model_dir / WEIGHTS_FILE), metadata={"model": cfg.model.name})
    interval.save(model_dir / INTERVAL_FILE)
    stale = model_dir / ONNX_FILE  # exported from the weights this call replaces
    if stale.is_file():
        stale.unlink()
    _write_manifest(model_dir)


def _write_manifest(model_dir: Path) -> None:
    doc = json.loads((model_dir / MANIFEST_FILE).read_text()) if (model_dir / MANIFEST_FILE).is_file() else {}
    doc = {k: v for k, v in doc.items() if (model_dir / k).is_file()}  # keeps model.onnx's entry, if exported
    doc.update({n: {"sha256": sha256(model_dir / n), "bytes": (model_dir / n).stat().st_size} for n in _HASHED})
    (model_dir / MANIFEST_FILE).write_text(json.dumps(doc, indent=2) + "\n")


def replace_interval(model_dir: str | Path, interval: CountInterval) -> None:
    """Replace the count interval of a saved model directory (weights untouched) and update its manifest."""
    model_dir = Path(model_dir)
    load_crowd_model(model_dir)  # a complete, intact directory
    interval.save(model_dir / INTERVAL_FILE)
    _write_manifest(model_dir)


def load_crowd_model(model_dir: str | Path) -> tuple[CrowdNet, CrowdConfig, CountInterval]:
    """Load a model directory in eval mode; missing, corrupt or mismatched files raise ModelError naming them."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError("model directory not found", str(model_dir))
    for name in (CONFIG_FILE, WEIGHTS_FILE, INTERVAL_FILE):
        if not (model_dir / name).is_file():
            raise ModelError("missing file", str(model_dir / name))
    verify_manifest(model_dir, _HASHED)
    try:
        cfg = CrowdConfig.from_yaml(model_dir / CONFIG_FILE)
    except ConfigError as exc:
        raise ModelError(str(exc), str(model_dir / CONFIG_FILE)) from exc
    net = load_weights(CrowdNet(cfg.model), model_dir / WEIGHTS_FILE)
    return net.eval(), cfg, CountInterval.load(model_dir / INTERVAL_FILE)


def load_weights(net: CrowdNet, path: str | Path) -> CrowdNet:
    """Load safetensors weights into ``net``; unreadable or shape-mismatched weights raise ModelError."""
    path = Path(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"unreadable weights: {exc}", str(path)) from exc
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0:3]
        raise ModelError(f"weights do not match the config: {' '.join(first)}", str(path)) from exc
    return net


def save_training_state(path: Path, net: CrowdNet, opt: torch.optim.Optimizer, step: int, extra: dict) -> None:
    """Resumable training checkpoint (weights, optimiser, step, RNG states, history)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "extra": extra}, tmp)
    tmp.replace(path)


def load_training_state(path: Path) -> dict:
    """Read a checkpoint written by :func:`save_training_state`; ModelError when unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt pickle
        raise ModelError(f"unreadable training checkpoint: {exc}", str(path)) from exc

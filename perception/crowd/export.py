"""ONNX export of the crowd counter (dynamic batch, H, W multiples of 16), onnx.checker and ORT parity."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from perception.crowd.model import INPUT_MULTIPLE, CrowdNet
from perception.engines.artifacts import save_checked_onnx
from perception.errors import EngineError

log = logging.getLogger(__name__)
OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "density"


def export_crowd_onnx(net: CrowdNet, path: str | Path, height: int = 384, width: int = 512,
                      max_side: int = 4096) -> Path:
    """Export ``net`` (eval mode) to ``path`` with dynamic batch/H/W, check it with onnx.checker and save it."""
    path = Path(path)
    if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
        raise EngineError(f"example size {height}x{width} must be a multiple of {INPUT_MULTIPLE}", str(path))
    net = net.eval()
    example = (torch.rand(1, 3, height, width),)
    m = INPUT_MULTIPLE
    h16 = torch.export.Dim("h16", min=2, max=max_side // m)
    w16 = torch.export.Dim("w16", min=2, max=max_side // m)
    shapes = {"image": {0: torch.export.Dim("batch", min=1, max=64), 2: m * h16, 3: m * w16}}
    try:
        with torch.no_grad():
            program = torch.onnx.export(net, example, dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=shapes, optimize=True,
                                        verbose=False)
    except Exception as exc:  # torch.export raises many error types
        raise EngineError(f"ONNX export failed: {str(exc).splitlines()[0][:500]}", str(path)) from exc
    if program is None:
        raise EngineError("ONNX export returned no program", str(path))
    model = program.model_proto
    model.doc_string = f"CrowdNet (attention={type(net.back[-1]).__name__}) exported by perception"
    return save_checked_onnx(model, path)


def ort_session(path: str | Path, threads: int = 1):  # -> onnxruntime.InferenceSession
    """A CPU ONNX Runtime session for an exported crowd model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise EngineError(f"cannot load ONNX model: {exc}", str(path)) from exc


def parity(net: CrowdNet, onnx_path: str | Path, sizes: tuple[tuple[int, int], ...] = ((384, 512), (256, 320)),
           seed: int = 0) -> dict[str, float]:
    """Max absolute density difference and count difference between PyTorch and ORT on random images."""
    sess = ort_session(onnx_path)
    rng = np.random.default_rng(seed)
    out = {"max_abs_density": 0.0, "max_abs_count": 0.0}
    net = net.eval()
    for h, w in sizes:
        x = rng.random((1, 3, h, w), dtype=np.float32)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        if got.shape != ref.shape:
            raise EngineError(f"ORT output {got.shape} != torch {ref.shape} at {h}x{w}", str(onnx_path))
        out["max_abs_density"] = max(out["max_abs_density"], float(np.abs(got - ref).max()))
        out["max_abs_count"] = max(out["max_abs_count"], float(abs(got.sum() - ref.sum())))
    return out


def export_model_dir(model_dir: str | Path, name: str = "model.onnx") -> tuple[Path, dict[str, float]]:
    """Export ``<model_dir>/<name>`` from a crowd model directory, record its sha256 in the directory's
    ``manifest.json`` and return (path, parity numbers)."""
    import json

    from perception.crowd.checkpoint import load_crowd_model
    from perception.detector.checkpoint import MANIFEST_FILE, sha256

    net, _, _ = load_crowd_model(model_dir)
    path = export_crowd_onnx(net, Path(model_dir) / name)
    manifest = Path(model_dir) / MANIFEST_FILE
    if manifest.is_file():
        doc = json.loads(manifest.read_text())
        doc[name] = {"sha256": sha256(path), "bytes": path.stat().st_size}
        manifest.write_text(json.dumps(doc, indent=2) + "\n")
    return path, parity(net, path)


def main(argv: list[str] | None = None) -> int:
    """``python -m perception.crowd.export MODEL_DIR``: export, check and print ORT parity."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("model_dir", type=Path)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    path, diff = export_model_dir(args.model_dir)
    print(f"{path}: onnx.checker ok; ORT parity max |density| {diff['max_abs_density']:.2e}, "
          f"max |count| {diff['max_abs_count']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

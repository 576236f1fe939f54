"""``perception export``: ONNX (+ INT8, FP16, TensorRT) artifacts of a model directory, checked and hashed."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception export``."""
    p = subparsers.add_parser("export", help="export the detector to ONNX / INT8 / FP16 / TensorRT",
                              description="Export the whole network to ONNX (dynamo exporter, dynamic pillar count) "
                                          "under <model>/export/, check it with onnx.checker and for parity with "
                                          "PyTorch on sim:calib frames, and record every artifact's sha256 in "
                                          "export/manifest.json.")
    p.add_argument("--model", type=Path, default=Path("models/fusion_default"), help="model directory")
    p.add_argument("--int8", action="store_true", help="also write a static QDQ INT8 model (ONNX Runtime CPU)")
    p.add_argument("--fp16", action="store_true", help="also write an FP16 model (GPU engines)")
    p.add_argument("--tensorrt", action="store_true", help="build a TensorRT engine for this machine's GPU")
    p.add_argument("--trt-precision", choices=("fp16", "int8"), default="fp16", help="TensorRT engine precision")
    p.add_argument("--calib-data", default="sim:calib",
                   help="frames for INT8 calibration and parity: sim:calib | KITTI folder | rosbag2 folder")
    p.add_argument("--calib-frames", type=int, default=64, help="frames for INT8 calibration")
    p.add_argument("--parity-frames", type=int, default=5, help="further frames for the parity check")
    p.add_argument("--sensitivity-frames", type=int, default=8,
                   help="frames to measure each INT8 group's error on (0: quantize every group unmeasured)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.set_defaults(func=run)
    return p


def format_manifest(doc: dict) -> str:
    """Summary lines: artifacts with sizes, parity per engine."""
    lines = [f"export of {doc.get('model', '?')} (opset {doc.get('opset', '?')})"]
    for name, entry in doc["files"].items():
        lines.append(f"  {name:34s} {entry['bytes'] / 1e6:7.2f} MB  sha256 {entry['sha256'][:16]}")
    for engine, rep in doc.get("parity", {}).items():
        worst = max(rep["max_head_error"].values()) if rep["max_head_error"] else 0.0
        kind = "exact" if rep["exact"] else "close"
        moved = sum(rep.get("index_mismatches", {}).values())
        lines.append(f"  parity {engine:18s} {'PASS' if rep['passed'] else 'FAIL'} ({kind}): max head error "
                     f"{worst:.3g}, index mismatches {moved}, detections identical {rep['detections_identical']}, "
                     f"agreement {rep['agreement']}")
    for group, row in doc.get("int8_sensitivity", {}).items():
        state = "quantized" if row["quantized"] else "kept FP32"
        lines.append(f"  int8 {group:16s} {state}: {row['detections']} matched, agreement {row['agreement']}, centre "
                     f"{row['center_error_m']} m, score {row['score_error']}, logvar {row['logvar_error']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Export and print a summary."""
    from perception.engines.export import ExportOptions, export_model

    options = ExportOptions(int8=args.int8, fp16=args.fp16, tensorrt=args.tensorrt, trt_precision=args.trt_precision,
                            calib_data=args.calib_data, calib_frames=args.calib_frames,
                            parity_frames=args.parity_frames, sensitivity_frames=args.sensitivity_frames,
                            num_threads=args.threads)
    print(format_manifest(export_model(args.model, options)))
    return 0

"""``perception eval``: KITTI AP, calibration and latency of a detector on sim, KITTI or a bag."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception eval``."""
    p = subparsers.add_parser("eval", help="evaluate a detector (AP, calibration, latency)",
                              description="KITTI AP_R40 (3D and BEV; Car@0.7, Pedestrian@0.5, Cyclist@0.5, "
                                          "moderate where labels allow) in the devkit's convention and exactly, "
                                          "object counts, 3D AP by range (0-20, 20-40, >40 m), detection ECE "
                                          "before/after calibration, 1σ/2σ coverage, false positives per frame at "
                                          "p >= 0.5, per-stage latency, LiDAR-only AP; --report draws every real "
                                          "frame (3 of a sim split).")
    p.add_argument("--model", default="models/fusion_default", help="model directory")
    p.add_argument("--data", default="sim:test",
                   help="sim:test | sim:val | KITTI folder | rosbag2 folder | a replay recording (re-scored)")
    p.add_argument("--backend", default="torch", help="engine backend (torch, onnxruntime, ...)")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most N frames")
    p.add_argument("--json", type=Path, default=None, help="write the metrics as JSON here")
    p.add_argument("--report", type=Path, default=None, help="write PNGs and index.html into this folder")
    p.add_argument("--no-lidar-only", action="store_true", help="skip the camera-removed run")
    p.add_argument("--pictures", type=int, default=None,
                   help="frames drawn in the report (default: every real frame, 3 of a sim split)")
    p.set_defaults(func=run)
    return p


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def format_metrics(m: dict) -> str:
    """Human-readable summary."""
    lines = [f"{m['model']} on {m['data']}: {m['frames']} frames (difficulty {m['difficulty']})"]
    if "ground_truth" in m:
        lines.append(f"  ground truth     {m['ground_truth']}")
    elif m.get("labelled_frames", m["frames"]) < m["frames"]:
        lines.append(f"  ground truth     {m['labelled_frames']} of {m['frames']} frames labelled (scored on those)")
    if "num_gt" in m:
        lines.append("  objects          " + "  ".join(f"{c} {n}" for c, n in m["num_gt"].items()))
    for key in ("ap3d", "ap3d_r40", "apbev", "apbev_r40", "ap3d_lidar_only", "ap3d_r40_lidar_only"):
        if key in m:
            cells = (f"{c} {'n/a' if v is None else f'{v:.2f}'}" for c, v in m[key].items())
            lines.append(f"  {key:16s} " + "  ".join(cells))
    for name, per_class in m.get("ap3d_by_range", {}).items():
        cells = (f"{c} {_fmt(v['ap'])}/{_fmt(v['ap_r40'])} (n={v['num_gt']})" for c, v in per_class.items())
        lines.append(f"  ap3d {name:11s} " + "  ".join(cells))
    if "ap_convention" in m:
        lines.append(f"  (AP: {m['ap_convention']}; by range: devkit/R40)")
    for key in ("dece_before", "dece_after", "coverage_1sigma", "coverage_2sigma", "fp_per_frame_p50",
                "lidar_only_car_retention"):
        if key in m:
            lines.append(f"  {key:16s} {m[key]}")
    lat = m.get("latency_ms", {})
    if lat:
        lines.append("  latency ms (p50/p99): " + ", ".join(
            f"{k} {v['p50']}/{v['p99']}" for k, v in lat.items() if isinstance(v, dict) and "p50" in v))
    if "torch_stages" in lat:
        lines.append("  torch stages ms: " + ", ".join(f"{k} {v}" for k, v in lat["torch_stages"].items()))
    if "report" in m:
        lines.append(f"  report: {m['report']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print (and optionally write) the metrics."""
    from perception.detector.api import FusionDetector
    from perception.detector.checkpoint import CONFIG_FILE
    from perception.detector.config import DetectorConfig
    from perception.eval.evaluate import evaluate
    from perception.io.recording import is_recording

    cfg = DetectorConfig.from_yaml(Path(args.model) / CONFIG_FILE)
    if is_recording(args.data):  # a `perception replay` recording: re-score it, the graph is not run again
        from perception.commands.replay import format_replay_metrics
        from perception.eval.replay import score_recording, write_replay_report

        classes = list(cfg.model.classes)
        metrics = (write_replay_report(args.data, args.report, classes) if args.report
                   else score_recording(args.data, classes))
        metrics.setdefault("report", "-")
        print(format_replay_metrics(metrics))
    else:
        detector = FusionDetector.load(args.model, backend=args.backend)
        metrics = evaluate(detector, args.data, cfg, limit=args.limit, lidar_only=not args.no_lidar_only,
                           report_dir=args.report, pictures=args.pictures)
        print(format_metrics(metrics))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=2) + "\n")
    return 0

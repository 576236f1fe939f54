"""``perception eval-ood``: AUROC and FPR@95TPR of every OOD score on simulated distribution shifts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception eval-ood``."""
    p = subparsers.add_parser("eval-ood", help="evaluate the OOD monitor on simulated shifts (AUROC, FPR@95TPR)",
                              description="Unknown objects (per detection) and heavy weather, night and a different "
                                          "LiDAR beam pattern (per frame) against clean frames of the same seeds. "
                                          "Frames are cached under data/ood/.")
    p.add_argument("--model", default="models/fusion_default", help="model directory (with fitted <model>/ood)")
    p.add_argument("--frames", type=int, default=100,
                   help="frames per shift (and clean frames); 100 give ~160 animal detections, AUROC +-0.012")
    p.add_argument("--seed", type=int, default=0, help="seed of the ood drives")
    p.add_argument("--shift", action="append", default=None,
                   help="evaluate only this shift (repeatable; default all): animal, debris, stroller, "
                        "construction_machine, heavy_rain, heavy_fog, heavy_snow, night, lidar_32_beams")
    p.add_argument("--min-score", type=float, default=None, help="smallest raw detector score of a detection "
                                                                 "sample (default: the one the stats were fitted with)")
    p.add_argument("--json", type=Path, default=None, help="write the metrics as JSON here")
    p.add_argument("--plot", type=Path, default=Path("out/ood/histograms.png"), help="score histograms PNG")
    p.add_argument("--workers", type=int, default=2, help="simulation processes")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--no-camera", action="store_true",
                   help="run every frame (clean and shifted) without its image, as after a camera failure: "
                        "frames are scored on the LiDAR part of their embedding")
    p.add_argument("--backend", default="torch", help="engine to run (its engine family's statistics are used; "
                   "auto = the default one)")
    p.set_defaults(func=run)
    return p


def format_table(doc: dict) -> str:
    """Rows = shifts, columns = scores, cells ``AUROC / FPR95``."""
    lines = []
    for shift, row in doc["auroc"].items():
        unit = doc["units"][shift]
        cells = "  ".join(f"{k} {_fmt(v)}/{_fmt(doc['fpr95'][shift][k])}" for k, v in row.items())
        n = doc["counts"][shift]
        lines.append(f"  {shift:22s} [{unit:9s} id {n['id']:4d} ood {n['ood']:4d}]  {cells}")
    for level, rates in doc.get("id_flagged", {}).items():
        cells = "  ".join(f"{k} {_fmt(v)}" for k, v in rates.items())
        lines.append(f"  in-distribution {level}s flagged at the fitted thresholds: {cells}")
    return "AUROC/FPR95 per shift and score:\n" + "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, write JSON and the histogram PNG."""
    from perception.errors import ConfigError
    from perception.eval.evaluate import DEFAULT_RIG
    from perception.ood.benchmark import collect_shift_scores, plot_histograms, summarize
    from perception.ood.collect import load_detector
    from perception.ood.monitor import OodMonitor
    from perception.ood.shifts import SHIFTS, shift_by_name
    from perception.rig import Rig

    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}", "eval-ood --frames")
    from perception.engines.registry import resolve_backend

    backend = resolve_backend(args.model, args.backend)
    monitor = OodMonitor.load(args.model, backend)
    if args.no_camera and monitor.stats.lidar is None:
        raise ConfigError("these OOD statistics have no models of the embedding's LiDAR part; refit them with "
                          f"`perception fit-ood --model {args.model} --backend {backend}`", "eval-ood --no-camera")
    detector = load_detector(args.model, args.threads, backend)
    min_score = args.min_score
    if min_score is None:
        min_score = float(monitor.stats.meta.get("fitted_on", {}).get("min_score", 0.1))
    shifts = SHIFTS if args.shift is None else tuple(shift_by_name(name) for name in args.shift)
    results = collect_shift_scores(detector, monitor, Rig.from_yaml(DEFAULT_RIG), args.frames, args.seed,
                                   min_score, shifts, workers=args.workers, camera=not args.no_camera)
    doc = {"model": detector.model_id, "model_dir": str(args.model),
           "weights_sha256": monitor.stats.meta.get("weights_sha256"), "frames_per_shift": args.frames,
           "seed": args.seed, "min_score": min_score, "camera": not args.no_camera,
           **summarize(results, monitor, camera=not args.no_camera)}
    doc["histograms"] = str(plot_histograms(results, args.plot))
    print(format_table(doc))
    print(f"  histograms: {doc['histograms']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0

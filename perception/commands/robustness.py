"""``perception robustness``: the corruption suite — AP, RA/mRA, D-ECE, 1σ coverage and monitor flags."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

#: The suite's corruptions (checked against :data:`perception.robustness.corruptions.CORRUPTIONS` by a test; listed
#: here so that building the parser imports nothing heavy).
CORRUPTION_NAMES = ("beam_reduction", "point_drop", "sector_drop", "crosstalk", "fog", "rain", "snow", "motion_blur",
                    "brightness", "darkness", "missing_camera", "spatial_misalignment", "temporal_misalignment")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception robustness``."""
    p = subparsers.add_parser(
        "robustness", help="corruption suite: RA/mRA, D-ECE and monitor flags per corruption and severity",
        description="Runs every frame clean and under each corruption at each severity (MultiCorrupt-style): "
                    "3D AP (Car, Pedestrian, Cyclist), RA = AP corrupted / clean, mRA, D-ECE, 1σ coverage and the "
                    "share of frames the sensor-health or OOD monitors flag. Corruptions: "
                    + ", ".join(CORRUPTION_NAMES) + ".")
    p.add_argument("--model", default="models/fusion_default", help="model directory")
    p.add_argument("--data", default="sim:test", help="sim:test | sim:calib | KITTI folder | rosbag2 folder")
    p.add_argument("--backend", default="auto", help="engine backend (auto = the model's default engine)")
    p.add_argument("--limit", type=int, default=None, help="at most N frames")
    p.add_argument("--corruptions", nargs="+", default=None, metavar="NAME", help="default: all")
    p.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3], metavar="S", help="default: 1 2 3")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruptions")
    p.add_argument("--frames-per-sequence", type=int, default=None,
                   help="consecutive frames forming one sequence (temporal misalignment uses earlier frames of "
                        "it; 0 = all); default: the drive length for sim:, 1 (independent frames) otherwise")
    p.add_argument("--threads", type=int, default=1, help="engine threads")
    p.add_argument("--json", type=Path, default=None, help="write the metrics as JSON here")
    p.add_argument("--report", type=Path, default=None, help="write plots, pictures and index.html here")
    p.add_argument("--shift-calibration", type=Path, default=None,
                   help="flagged-input calibration to measure (default: <model>/calibration_flagged.json if present)")
    p.add_argument("--fit-shift-calibration", type=Path, default=None, metavar="OUT",
                   help="fit a flagged-input calibration on this run's flagged corrupted frames and write it here "
                        "(use a calibration split, never the test split)")
    p.add_argument("--force", action="store_true", help="overwrite --fit-shift-calibration's file")
    p.set_defaults(func=run)
    return p


class _Keeper:
    """Passes frames through and keeps one (the ``index``-th) with its earlier frames, for the pictures."""

    def __init__(self, frames: Iterable, index: int, history: int = 3) -> None:
        self.frames, self.index, self.history = frames, index, history
        self.kept: tuple | None = None
        self._recent: list = []

    def __iter__(self) -> Iterator:
        for i, f in enumerate(self.frames):
            if i == self.index:
                self.kept = (f, tuple(self._recent))
            self._recent = (self._recent + [f])[-self.history:]
            yield f


def run(args: argparse.Namespace) -> int:
    """Run the suite, print the table, write JSON / report / fitted calibration."""
    from perception.detector.checkpoint import CONFIG_FILE
    from perception.detector.config import DetectorConfig
    from perception.engines.registry import resolve_backend
    from perception.errors import ConfigError
    from perception.eval.evaluate import open_source
    from perception.io import KittiDataset
    from perception.io.kitti import is_kitti_dir
    from perception.ood.collect import load_detector
    from perception.ood.monitor import OodMonitor
    from perception.robustness.corruptions import CORRUPTIONS
    from perception.robustness.report import format_table, write_report
    from perception.robustness.suite import check_selection, fit_flagged_calibration, run_suite, summarize
    from perception.trust.calibration import Calibration
    from perception.trust.shift_calibration import shift_calibration_path

    corruptions, severities = check_selection(args.corruptions or list(CORRUPTIONS), args.severities)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}", "robustness --limit")
    out = args.fit_shift_calibration
    if out is not None and out.exists() and not args.force:
        raise ConfigError("exists; pass --force to overwrite", str(out))
    if out is not None and args.data == "sim:test":
        raise ConfigError("fit the flagged-input calibration on a calibration split (sim:calib), not the test split",
                          "robustness --fit-shift-calibration")
    cfg = DetectorConfig.from_yaml(Path(args.model) / CONFIG_FILE)
    backend = resolve_backend(args.model, args.backend)
    detector = load_detector(args.model, args.threads, backend)
    monitor = OodMonitor.load(args.model, backend)
    shift_path = args.shift_calibration or shift_calibration_path(args.model)
    shift_cal = Calibration.load(shift_path) if (args.shift_calibration or shift_path.is_file()) else None
    fps = args.frames_per_sequence
    if fps is None:
        fps = cfg.train.frames_per_drive if args.data.startswith("sim:") else 1
    frames, total = open_source(args.data, cfg, args.limit)
    if total is None and is_kitti_dir(args.data):  # a KITTI folder's length is known: the progress bar gets a total
        n = len(KittiDataset(args.data))
        total = n if args.limit is None else min(n, args.limit)
    keeper = _Keeper(frames, index=min(3 if fps != 1 else 1, (total or 1) - 1))
    suite = run_suite(detector, monitor, keeper, total, corruptions, severities, args.seed, fps)
    from perception.eval.evaluate import difficulty_for

    difficulty = difficulty_for([r.record for r in suite.records[("clean", 0)]])
    doc = {"model": detector.model_id, "model_dir": str(args.model), "data": args.data, "backend": backend,
           "seed": args.seed, "difficulty": difficulty, "frames_per_sequence": fps,
           "shift_calibration": str(shift_path) if shift_cal is not None else None,
           **summarize(suite, list(cfg.model.classes), difficulty, shift_cal)}
    if out is not None:
        cal = fit_flagged_calibration(suite, f"{args.data} corrupted + clean, LiDAR-flagged frames "
                                      f"({suite.frames} frames, seed {args.seed})")
        out.parent.mkdir(parents=True, exist_ok=True)
        cal.save(out)
        doc["fitted_shift_calibration"] = str(out)
    if args.report is not None:
        doc["report"] = str(write_report(args.report, doc, keeper.kept, corruptions, args.seed))
    print(format_table(doc))
    print(f"  {suite.seconds_per_frame:.1f} s per frame (clean + {len(corruptions) * len(severities)} corrupted runs)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0

"""How often the OOD monitor flags clean real frames: frame-level flag rate of the shipped statistics on real
KITTI folders (the issue-12 target: <= 10 % of clean real frames flagged).

    python benchmarks/ood_real_flags.py --model models/fusion_default \
        ../shared/data/kitti_labelled ../shared/data/kitti_raw_0926_traffic ../shared/data/kitti_raw_lidar_only
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from tqdm import tqdm

from perception.detector.api import FusionDetector
from perception.io import open_frames
from perception.ood.monitor import OodMonitor


def flag_rates(model: str, folder: str, frame_scores: tuple[str, ...] = ("frame", "embedding")) -> dict[str, object]:
    """Share of ``folder``'s frames whose frame scores are above their thresholds, and the scores' median."""
    detector = FusionDetector.load(model)
    monitor = OodMonitor.load(model)
    scores: dict[str, list[float]] = {s: [] for s in frame_scores}
    flags: dict[str, list[bool]] = {s: [] for s in frame_scores}
    thresholds: dict[str, float] = {}
    lidar_only = 0
    for frame in tqdm(open_frames(folder), desc=folder, unit="frame"):
        res = monitor.score_result(detector(frame))
        lidar_only += res.lidar_only
        for s in frame_scores:
            scores[s].append(res.frame[s])
            flags[s].append(res.frame_flag(s))
            thresholds[s] = res.thresholds["frame"][s]
    n = len(next(iter(flags.values())))
    return {"folder": folder, "frames": n, "lidar_only_frames": lidar_only,
            **{s: {"flagged": int(np.sum(flags[s])), "share": round(float(np.mean(flags[s])), 3),
                   "median_score": round(float(np.median(scores[s])), 2), "threshold": round(thresholds[s], 2)}
               for s in frame_scores}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="real KITTI folders")
    ap.add_argument("--model", default="models/fusion_default")
    args = ap.parse_args()
    for folder in args.folders:
        print(json.dumps(flag_rates(args.model, folder)))


if __name__ == "__main__":
    main()

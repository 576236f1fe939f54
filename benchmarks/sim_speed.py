"""Simulator speed on one core: per-stage wall and CPU time of frames with a 64-beam sweep and a full image.

    .venv/bin/python benchmarks/sim_speed.py [--rig calibration/sim_default.yaml] [--drives 3 --frames 4]

Open3D ray casting runs single-threaded; wall times include waiting for the CPU on a busy machine,
CPU times do not (the target is <= 0.5 s of work per frame).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from perception.errors import PerceptionError
from perception.rig import Rig
from perception.sim import SceneOptions, simulate_drive
from perception.sim.raycast import set_ray_threads

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("sim_speed")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rig", type=Path, default=REPO / "calibration" / "sim_default.yaml")
    ap.add_argument("--drives", type=int, default=3)
    ap.add_argument("--frames", type=int, default=4, help="frames per drive")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weather", default="clear")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    set_ray_threads(1)
    try:
        rig = Rig.from_yaml(args.rig)
        options = SceneOptions(weather=args.weather)
    except PerceptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    setup_wall, setup_cpu, n_points, n_boxes = [], [], [], []
    with tqdm(total=args.drives * args.frames, desc="simulating", unit="frame") as bar:
        for d in range(args.drives):
            t0, c0 = time.perf_counter(), time.process_time()
            drive = simulate_drive(rig, args.frames, args.seed + d, options)
            first = True
            for frame in drive:
                if first:  # world generation and per-drive set-up happen before the first frame
                    frame_wall = sum(frame.meta["timings_ms"].values())
                    frame_cpu = sum(frame.meta["cpu_ms"].values())
                    setup_wall.append((time.perf_counter() - t0) * 1e3 - frame_wall)
                    setup_cpu.append((time.process_time() - c0) * 1e3 - frame_cpu)
                    first = False
                for k, v in frame.meta["timings_ms"].items():
                    wall.setdefault(k, []).append(v)
                for k, v in frame.meta["cpu_ms"].items():
                    cpu.setdefault(k, []).append(v)
                n_points.append(len(frame.points))
                n_boxes.append(len(frame.boxes))
                bar.update()
    h, w = rig.height, rig.width
    print(f"rig {rig.name}: {rig.lidar_model.get('channels', 64)}-beam LiDAR, {w}x{h} camera; "
          f"{len(n_points)} frames, {np.mean(n_points):.0f} points and {np.mean(n_boxes):.1f} boxes per frame")
    print(f"{'stage':<12} {'wall ms':>10} {'cpu ms':>10}")
    for k in wall:
        print(f"{k:<12} {np.mean(wall[k]):>10.1f} {np.mean(cpu[k]):>10.1f}")
    total_wall = np.sum([np.mean(v) for v in wall.values()])
    total_cpu = np.sum([np.mean(v) for v in cpu.values()])
    print(f"{'frame total':<12} {total_wall:>10.1f} {total_cpu:>10.1f}")
    print(f"{'drive set-up':<12} {np.mean(setup_wall):>10.1f} {np.mean(setup_cpu):>10.1f}   (once per drive)")
    per_frame_10 = total_cpu + np.mean(setup_cpu) / 10
    print(f"CPU per frame in 10-frame drives incl. set-up: {per_frame_10:.0f} ms "
          f"({'meets' if per_frame_10 <= 500 else 'misses'} the 500 ms target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
